"""Running on several devices or machines: strategy choice, precision, multi-worker fit.

Everything here uses TensorFlow's own engines (`tf.distribute`,
`keras.mixed_precision`); nothing distributes by hand.

* `choose_strategy("auto" | "default" | "mirrored" | "multi_worker")`: build
  and compile models inside `strategy.scope()`; the batch size of a dataset
  is the *global* batch, split across the replicas.
* `shard_by_data(dataset)`: the auto-shard policy set explicitly to `DATA`,
  which in-memory data needs (it has no files to shard by).
* `precision("mixed_float16")`: Keras' global dtype policy for the models
  built inside the block; keras-team's logits layers stay float32.
* `fit(model, dataset, ...)`: `model.fit` on one machine; under
  `MultiWorkerMirroredStrategy`, where Keras 3's `model.fit` fails
  (keras-team/keras#20585), a loop that runs the model's own `train_step`
  through `strategy.run`, with Keras callbacks, and `tf.train` checkpoints
  written by the chief.

Example:
    >>> strategy = choose_strategy("default")
    >>> with strategy.scope():
    ...     model = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    >>> strategy.num_replicas_in_sync
    1
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import keras
import tensorflow as tf

from keras_team.checkpoints import BackupAndRestore
from keras_team.errors import KerasTeamError

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def choose_strategy(name: str = "auto", *, devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` called `name`.

    Args:
        name: `"auto"` (`MirroredStrategy` when more than one GPU is visible,
            else the default strategy), `"default"` (one device),
            `"mirrored"` (synchronous data parallelism over `devices`: by
            default every GPU, or every logical CPU device when there is no
            GPU) or `"multi_worker"` (`MultiWorkerMirroredStrategy`, its
            cluster read from the `TF_CONFIG` environment variable).
        devices: the devices of `"mirrored"`, e.g. `["/cpu:0", "/cpu:1"]`.

    Example:
        >>> choose_strategy("default").num_replicas_in_sync
        1
        >>> choose_strategy("tpu")
        Traceback (most recent call last):
        ...
        keras_team.errors.KerasTeamError: strategy='tpu' is not valid: expected one of auto, default, mirrored, multi_worker
    """
    if name not in STRATEGIES:
        raise KerasTeamError("strategy", name, f"one of {', '.join(STRATEGIES)}")
    if name == "multi_worker":  # first: it must configure TensorFlow's runtime before anything starts it
        if "TF_CONFIG" not in os.environ:
            raise KerasTeamError("strategy", name, "'multi_worker' with the cluster in the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if devices is None:
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    # One MirroredStrategy per device set and process: a second one on the same
    # devices reuses the first's collective keys and its all-reduces fail.
    devices = tuple(devices)
    if devices not in _MIRRORED:
        _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices))
    return _MIRRORED[devices]


_MIRRORED: dict[tuple[str, ...], tf.distribute.MirroredStrategy] = {}


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with the auto-shard policy `DATA`: each worker takes its share of every batch.

    In-memory data (`from_tensor_slices`) has no files, so the default
    `AUTO` policy would fall back to `DATA` with a warning; this says it.

    Example:
        >>> ds = shard_by_data(tf.data.Dataset.range(4).batch(2))
        >>> ds.options().experimental_distribute.auto_shard_policy.name
        'DATA'
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def global_batch_size(batch_size: int, examples: int | None = None) -> int:
    """The global batch size to serve `examples` with, so that every replica gets a fair share.

    Under a mirrored strategy, Keras 3 fails when the replicas' shares of a
    batch differ in the first batch (it reduces that batch across replicas
    in `_maybe_symbolic_build` of its TensorFlow trainer: "Inputs to
    operation AddN ... must have the same size") or when one replica gets
    none of a last, partial batch. So the global batch must be a multiple
    of the replicas, and it is lowered (by multiples of the replicas) until
    the last batch leaves no replica empty. One device: unchanged. A split
    of unknown length (`examples=None`, a stream) is only checked.

    Example:
        >>> global_batch_size(32, 15)   # one device
        32
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1:
        return batch_size
    if batch_size % replicas:
        raise KerasTeamError("batch_size", batch_size, f"a multiple of the {replicas} replicas (it is the global batch)")
    if examples is None:
        return batch_size
    for size in range(min(batch_size, examples - examples % replicas), 0, -replicas):
        if examples % size == 0 or examples % size >= replicas:
            return size
    return batch_size  # fewer examples than replicas: no size helps


@contextlib.contextmanager
def precision(policy: str = "float32") -> Iterator[None]:
    """Models built inside the block compute in `policy`; the previous policy comes back after.

    `"mixed_float16"` and `"mixed_bfloat16"` keep variables in float32 and
    compute in half precision; keras-team's logits layers and a Team's
    outputs are declared float32, so losses and predictions stay float32.

    Example:
        >>> with precision("mixed_bfloat16"):
        ...     model = keras_team.zoo.seed_cnn((8, 8, 1), 5)
        >>> model.get_layer("conv1").compute_dtype, keras.backend.standardize_dtype(model(np.zeros((1, 8, 8, 1))).dtype)
        ('bfloat16', 'float32')
    """
    if policy not in PRECISIONS:
        raise KerasTeamError("precision", policy, f"one of {', '.join(PRECISIONS)}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes outputs: always, except on the non-chief workers of a cluster.

    Example:
        >>> is_chief()
        True
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    kind, index = resolver.task_type, resolver.task_id
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in resolver.cluster_spec().as_dict())


def _is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def fit(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    epochs: int = 1,
    validation_data: tf.data.Dataset | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint_dir: str | None = None,
    verbose: int | str = "auto",
) -> keras.callbacks.History:
    """Train a compiled `model` on a batched `dataset` under the current strategy.

    With one worker this is `model.fit` (plus the crash-safe
    `keras_team.checkpoints.BackupAndRestore` in `checkpoint_dir`). Under
    `MultiWorkerMirroredStrategy` every worker calls it with the same
    global-batch dataset: it is sharded by `DATA`, each step runs the model's own `train_step` (its losses, loss weights
    and metrics, the Team's summed member losses included) on every replica
    through `strategy.run`, and gradients are all-reduced by the Keras
    optimizer. Callbacks and progress run on the chief only; at the end of
    every epoch a `tf.train.CheckpointManager` checkpoint of the model, the
    optimizer and the epoch is written (the chief into `checkpoint_dir`,
    the others into a temporary folder they delete), and a restarted
    cluster resumes after the last finished epoch.

    Args:
        model: compiled inside the strategy's scope.
        dataset: batched `(x, y)`, the batch being the global batch.
        epochs: epochs to train in all (finished ones are skipped on resume).
        validation_data: batched `(x, y)` evaluated after every epoch.
        callbacks: Keras callbacks.
        checkpoint_dir: where to checkpoint for resuming; None: no checkpoints.
        verbose: as for `model.fit`.

    Example:
        >>> model = keras_team.zoo.seed_cnn((8, 8, 1), 2)
        >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> data = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 1)), np.zeros(4, "int32"))).batch(2)
        >>> fit(model, data, epochs=1, verbose=0).epoch
        [0]
    """
    strategy = model.distribute_strategy
    if not _is_multi_worker(strategy):
        callbacks = list(callbacks)
        if checkpoint_dir:
            callbacks.append(BackupAndRestore(checkpoint_dir))
        return model.fit(dataset, epochs=epochs, validation_data=validation_data, callbacks=callbacks,
                         verbose=verbose, shuffle=False)
    return _MultiWorkerLoop(model, strategy, checkpoint_dir).fit(
        dataset, epochs=epochs, validation_data=validation_data, callbacks=callbacks, verbose=verbose
    )


class _MultiWorkerLoop:
    """`strategy.run` around the model's train/test steps; what `fit` does under several workers."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, checkpoint_dir: str | None):
        self.model = model
        self.strategy = strategy
        self.chief = is_chief(strategy)
        with strategy.scope():
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            model.optimizer.build(model.trainable_variables)
        self.manager = None
        if checkpoint_dir:
            checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch)
            latest = tf.train.latest_checkpoint(checkpoint_dir)  # the chief's, read by every worker
            if latest:
                checkpoint.restore(latest).expect_partial()
            self._write_dir = checkpoint_dir if self.chief else tempfile.mkdtemp(prefix="keras_team_worker_")
            self.manager = tf.train.CheckpointManager(checkpoint, self._write_dir, max_to_keep=1)

    def _step(self, step_fn):
        strategy = self.strategy

        @tf.function
        def run(batch):
            logs = strategy.run(step_fn, args=(batch,))
            # Metric results are already aggregated over all replicas: take one.
            return {key: strategy.experimental_local_results(value)[0] for key, value in logs.items()}

        return run

    def _evaluate(self, dataset: tf.data.Dataset, step) -> dict:
        self.model.reset_metrics()
        logs = {}
        for batch in self.strategy.experimental_distribute_dataset(shard_by_data(dataset)):
            logs = step(batch)
        return {f"val_{key}": float(value) for key, value in logs.items()}

    def fit(self, dataset, *, epochs, validation_data, callbacks, verbose) -> keras.callbacks.History:
        model = self.model
        history = keras.callbacks.History()
        callbacks = keras.callbacks.CallbackList(
            list(callbacks) if self.chief else [], add_history=False, add_progbar=self.chief and verbose != 0,
            model=model, verbose=1 if verbose == "auto" else verbose, epochs=epochs, steps=None,
        )
        history.set_model(model)
        history.on_train_begin()
        train_step, test_step = self._step(model.train_step), self._step(model.test_step)
        distributed = self.strategy.experimental_distribute_dataset(shard_by_data(dataset))
        model.stop_training = False
        callbacks.on_train_begin()
        for epoch in range(int(self.epoch.numpy()), epochs):
            model.reset_metrics()
            callbacks.on_epoch_begin(epoch)
            logs = {}
            for step, batch in enumerate(distributed):
                callbacks.on_train_batch_begin(step)
                logs = train_step(batch)
                callbacks.on_train_batch_end(step, logs)
            logs = {key: float(value) for key, value in logs.items()}
            if validation_data is not None:
                logs.update(self._evaluate(validation_data, test_step))
            self.epoch.assign(epoch + 1)
            if self.manager is not None:
                self.manager.save()
            callbacks.on_epoch_end(epoch, logs)
            history.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callbacks.on_train_end()
        if self.manager is not None and not self.chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
        return history


def cluster_config(workers: Sequence[str], index: int) -> str:
    """The `TF_CONFIG` value of worker `index` of a cluster of `workers` ("host:port").

    Worker 0 is the chief: it alone writes checkpoints and outputs.

    Example:
        >>> json.loads(cluster_config(["10.0.0.1:2222", "10.0.0.2:2222"], 1))["task"]
        {'type': 'worker', 'index': 1}
    """
    if not 0 <= index < len(workers):
        raise KerasTeamError("index", index, f"a worker index in 0..{len(workers) - 1}")
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})
