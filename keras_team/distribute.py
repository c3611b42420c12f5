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
* `fit_on_chief(model, fit)`: for small models, the chief alone fits a
  local copy and every worker receives its weights and result.
* `cluster()`, `agree(ok)`, `restore(checkpoint, model)`, `worker_failures()`:
  what `keras-team run` on several machines needs around that (the
  cluster `TF_CONFIG` names, a barrier, chief-first checkpoint restores, a
  lost worker as one clear error).

Example:
    >>> strategy = choose_strategy("default")
    >>> with strategy.scope():
    ...     model = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    >>> strategy.num_replicas_in_sync
    1
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_team.backend import is_tensorflow, require_tensorflow
from keras_team.checkpoints import EVERY_SECONDS, BackupAndRestore
from keras_team.errors import KerasTeamError
from keras_team.tf_config import cluster_config  # noqa: F401  (TensorFlow-free, for the command line)

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
            cluster read from the `TF_CONFIG` environment variable; `"auto"`
            picks it too when `TF_CONFIG` names a cluster of several tasks).
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
    if name == "auto" and cluster() is not None:
        name = "multi_worker"
    if name in ("mirrored", "multi_worker"):
        require_tensorflow(f"the {name} strategy")
    elif not is_tensorflow():
        return tf.distribute.get_strategy()  # one device: Keras' own fit on JAX or PyTorch
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


def steps_per_execution(setting: int | str, steps_per_epoch: int) -> int:
    """Training batches per call into TensorFlow: `setting` (at most the `steps_per_epoch`), or for `"auto"` 10 when an epoch has 50 steps or more, else 1.

    More steps per call than an epoch has would change nothing but the
    size of the traced loop (an absurd setting hung the first stage), so it
    is lowered to the epoch's steps; a run's stage figures record the value used.

    Measured on two CPU cores (benchmarks/results/throughput.json,
    default_run.json): 10 steps per call trained 1.41x / 1.22x / 1.18x the
    examples per second of one step at batch 32 / 100 / 256 (625 / 200 / 79
    steps per epoch), but the default run, whose few-shot epochs are one
    step each, took 28.9 s instead of 21.1 s with it, and its 28-step
    leader epochs gained nothing. Under a `tf.distribute` strategy scope it
    is 1: Keras 3.15's multi-step loop fails under `MirroredStrategy` ("You
    must feed a value for placeholder tensor"), so more is refused there.

    Example:
        >>> steps_per_execution("auto", 625), steps_per_execution("auto", 1), steps_per_execution(4, 1)
        (10, 1, 1)
    """
    distributed = tf.distribute.has_strategy()
    if setting == "auto":
        return 10 if steps_per_epoch >= 50 and not distributed else 1
    if setting > 1 and distributed:
        raise KerasTeamError("steps_per_execution", setting, "1 or auto under a tf.distribute strategy (Keras "
                             "3.15's multi-step loop fails under MirroredStrategy)")
    return min(setting, max(steps_per_epoch, 1))


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


def strategy_of(model: keras.Model) -> tf.distribute.Strategy:
    """The strategy `model` was built under (only TensorFlow-backend models have one)."""
    return model.distribute_strategy if is_tensorflow() else tf.distribute.get_strategy()


def _is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class Cluster(NamedTuple):
    """The cluster this process joins, as `TF_CONFIG` says (TensorFlow's `TFConfigClusterResolver` reads it)."""

    workers: tuple[str, ...]
    index: int
    chief: bool

    def describe(self) -> str:
        """One line: which worker this is, of which workers, and who writes.

        Example:
            >>> Cluster(("10.0.0.1:2222", "10.0.0.2:2222"), 1, False).describe()
            'worker 1 of 2 (10.0.0.1:2222 chief, 10.0.0.2:2222 this one); the chief writes the outputs, this worker only a temporary folder it removes'
        """
        hosts = ", ".join(f"{host}{' chief' if i == 0 else ''}{' this one' if i == self.index else ''}"
                          for i, host in enumerate(self.workers))
        who = ("this worker writes the outputs" if self.chief
               else "the chief writes the outputs, this worker only a temporary folder it removes")
        return f"worker {self.index} of {len(self.workers)} ({hosts}); {who}"


def cluster() -> Cluster | None:
    """The cluster `TF_CONFIG` names (a `chief` job, then the `worker`s), or None outside one (one task or no `TF_CONFIG`).

    Example:
        >>> getfixture("monkeypatch").setenv("TF_CONFIG", cluster_config(["10.0.0.1:2222", "10.0.0.2:2222"], 1))
        >>> cluster()
        Cluster(workers=('10.0.0.1:2222', '10.0.0.2:2222'), index=1, chief=False)
    """
    if not os.environ.get("TF_CONFIG"):
        return None
    try:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        jobs = resolver.cluster_spec().as_dict()
    except (ValueError, TypeError, AttributeError) as error:  # json.JSONDecodeError is a ValueError
        raise KerasTeamError("TF_CONFIG", os.environ["TF_CONFIG"], f"TensorFlow's cluster JSON ({error})") from None
    workers = [*jobs.get("chief", []), *jobs.get("worker", [])]
    if len(workers) < 2:
        return None
    kind, index = resolver.task_type, resolver.task_id
    if kind not in ("chief", "worker") or index is None:
        raise KerasTeamError("TF_CONFIG", os.environ["TF_CONFIG"], "a task of type 'chief' or 'worker' with an index")
    position = index if kind == "chief" else len(jobs.get("chief", [])) + index
    return Cluster(tuple(workers), position, position == 0)


def agree(ok: bool = True, strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether every worker says `ok`: a barrier (an all-reduce) under several workers; `ok` itself otherwise.

    Example:
        >>> agree(True), agree(False)
        (True, False)
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not _is_multi_worker(strategy):
        return ok

    return bool(_sum_over_workers([0.0 if ok else 1.0], strategy)[0] == 0.0)


def restore(checkpoint: BackupAndRestore, model: keras.Model) -> int:
    """`checkpoint.restore(model)` on every worker, the chief first; the epoch the fit resumes at.

    The chief may tidy the checkpoint folder (a killed write's leftovers, an
    unreadable checkpoint set aside); the others read it after that, so every
    worker starts from the same weights.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> restore(BackupAndRestore(getfixture("tmp_path") / "none"), model)
        0
    """
    strategy = strategy_of(model)
    if not _is_multi_worker(strategy):
        return checkpoint.restore(model)
    if model.optimizer is not None and not model.optimizer.built:  # on every worker: it creates variables
        model.optimizer.build(model.trainable_variables)
    with _OutsideStrategy() as outside:
        if is_chief(strategy):
            outside.call(checkpoint.restore, model)
        agree(True, strategy)
        if not is_chief(strategy):
            outside.call(checkpoint.restore, model)
    return checkpoint.initial_epoch


class _OutsideStrategy:
    """Runs calls in a thread of its own, out of every `tf.distribute` strategy scope (TensorFlow keeps them per thread).

    What one worker does alone (the chief's callbacks and checkpoint writes)
    must not create variables in the `MultiWorkerMirroredStrategy` scope: each
    such variable is a broadcast the other workers never join, and Keras'
    `save_weights`/`load_weights` make a reference `Optimizer` (two variables)
    every time. Out of the scope they are plain, local variables.
    """

    def __enter__(self) -> _OutsideStrategy:
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="keras_team_outside")
        return self

    def __exit__(self, *exc) -> None:
        self._thread.shutdown()

    def call(self, fn, /, *args):
        return self._thread.submit(fn, *args).result()


def outside_strategy(fn, /, *args):
    """`fn(*args)` in a thread out of every `tf.distribute` strategy scope: its models and variables are local to this process.

    Example:
        >>> with choose_strategy("mirrored", devices=["/cpu:0"]).scope():
        ...     outside_strategy(tf.distribute.has_strategy)
        False
    """
    with _OutsideStrategy() as outside:
        return outside.call(fn, *args)


CLUSTER_FAILURES = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError)


@contextlib.contextmanager
def worker_failures(workers: str) -> Iterator[None]:
    """A worker lost mid-run (TensorFlow's heartbeats stop, about 10 s) as one `KerasTeamError` on `workers`.

    Example:
        >>> with worker_failures("h0:2222,h1:2222"):
        ...     raise tf.errors.UnavailableError(None, None, "The following tasks are unhealthy (stopped sending heartbeats): /job:worker/replica:0/task:1")
        Traceback (most recent call last):
        ...
        keras_team.errors.KerasTeamError: workers='h0:2222,h1:2222' is not valid: expected every worker running until the run ends (lost /job:worker/replica:0/task:1); start every worker again with the same command: finished stages are kept and the running one resumes at its last checkpoint
    """
    try:
        yield
    except CLUSTER_FAILURES as error:
        tasks = re.findall(r"/job:\w+/replica:\d+/task:\d+", error.message)
        what = f"lost {tasks[-1]}" if tasks else (error.message.strip().splitlines() or ["a worker stopped"])[0]
        raise KerasTeamError("workers", workers, f"every worker running until the run ends ({what}); start every "
                             "worker again with the same command: finished stages are kept and the running one "
                             "resumes at its last checkpoint") from None


def fit(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    epochs: int = 1,
    validation_data: tf.data.Dataset | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint_dir: str | None = None,
    verbose: int | str = "auto",
    steps_per_epoch: int | None = None,
    initial_epoch: int = 0,
    worker_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> keras.callbacks.History:
    """Train a compiled `model` on a batched `dataset` under the current strategy.

    With one worker this is `model.fit` (plus the crash-safe
    `keras_team.checkpoints.BackupAndRestore` in `checkpoint_dir`). Under
    `MultiWorkerMirroredStrategy` every worker calls it with the same
    global-batch dataset: it is sharded by `DATA`, each step runs the model's own `train_step` (its losses, loss weights
    and metrics, the Team's summed member losses included) on every replica
    through `strategy.run`, and gradients are all-reduced by the Keras
    optimizer. Callbacks and progress run on the chief only (`worker_callbacks` on
    every worker), and a stop one of them asks for
    (`model.stop_training`) stops every worker. Two ways to
    resume a restarted cluster after its last finished epoch: a
    `keras_team.checkpoints.BackupAndRestore` among the callbacks (the chief
    writes it; every worker restores it, the chief first), or
    `checkpoint_dir`: a `tf.train.CheckpointManager` checkpoint of the model,
    the optimizer and the epoch at the end of an epoch at most every 5 s, by
    the chief's clock, and after the last (the chief into `checkpoint_dir`,
    the others into a temporary folder they delete). An epoch is one call
    into TensorFlow for its train steps and one for its validation, and one
    all-reduce beside the gradients' (batch callbacks see one batch per
    epoch, as with Keras' `steps_per_execution`).

    Args:
        model: compiled inside the strategy's scope.
        dataset: batched `(x, y)`, the batch being the global batch.
        epochs: epochs to train in all (finished ones are skipped on resume).
        validation_data: batched `(x, y)` evaluated after every epoch.
        callbacks: Keras callbacks.
        checkpoint_dir: where to checkpoint for resuming; None: no checkpoints.
        verbose: as for `model.fit`.
        steps_per_epoch, initial_epoch: as for `model.fit` (with
            `steps_per_epoch`, `dataset` is one stream read on across epochs).
        worker_callbacks: callbacks every worker runs, after `callbacks`:
            ones that read only the epoch's figures and the weights (alike on
            every worker) and may set the weights, such as
            `EarlyStopping(restore_best_weights=True)`, whose restore every
            worker must apply. On one machine they are more `callbacks`.

    Example:
        >>> model = keras_team.zoo.seed_cnn((8, 8, 1), 2)
        >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> data = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 1)), np.zeros(4, "int32"))).batch(2)
        >>> fit(model, data, epochs=1, verbose=0).epoch
        [0]
    """
    strategy = strategy_of(model)
    with synchronized_batch_norm(model, strategy):
        if not _is_multi_worker(strategy):
            callbacks = [*callbacks, *worker_callbacks]
            if checkpoint_dir:
                callbacks.append(BackupAndRestore(checkpoint_dir))
            return model.fit(dataset, epochs=epochs, validation_data=validation_data, callbacks=callbacks,
                             verbose=verbose, shuffle=False, steps_per_epoch=steps_per_epoch,
                             initial_epoch=initial_epoch)
        return _MultiWorkerLoop(model, strategy, checkpoint_dir).fit(
            dataset, epochs=epochs, validation_data=validation_data, callbacks=callbacks, verbose=verbose,
            steps_per_epoch=steps_per_epoch, initial_epoch=initial_epoch, worker_callbacks=worker_callbacks,
        )


def _batch_norms(layer: keras.Layer) -> Iterator[keras.layers.BatchNormalization]:
    if isinstance(layer, keras.layers.BatchNormalization):
        yield layer
    for inner in getattr(layer, "layers", ()):  # a model's layers, nested models included
        yield from _batch_norms(inner)


@contextlib.contextmanager
def synchronized_batch_norm(model: keras.Model, strategy: tf.distribute.Strategy | None = None) -> Iterator[None]:
    """Within the block, `model`'s batch norms take their batch statistics over the global batch, on several replicas.

    Keras' `BatchNormalization` normalises each replica's share of a batch by
    that share's own mean and variance and moves its moving statistics by
    them, so under `MirroredStrategy` the replicas (and under
    `MultiWorkerMirroredStrategy` the workers) end with different moving
    statistics and gradients unlike one device's. Its own option
    `synchronized=True` (TensorFlow) all-reduces them: every replica uses
    the global batch's, as one device does. It is set for the block only
    (the saved config keeps the user's setting); one replica: unchanged.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
        >>> with synchronized_batch_norm(model):
        ...     model.layers[0].synchronized
        False
    """
    strategy = strategy or strategy_of(model)
    changed = ([bn for bn in _batch_norms(model) if not bn.synchronized]
               if is_tensorflow() and strategy.num_replicas_in_sync > 1 else [])
    for bn in changed:
        bn.synchronized = True
    if changed and getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)  # a step traced before would keep the per-replica statistics
    try:
        yield
    finally:
        for bn in changed:
            bn.synchronized = False


class _MultiWorkerLoop:
    """What `fit` does under several workers: the model's train/test steps through `strategy.run`, compiled per epoch.

    An epoch costs two calls into TensorFlow and one small all-reduce beside
    the gradients' own: one call runs all of the epoch's train steps (a
    `tf.range` loop) and averages the training figures over the workers; one
    runs the validation steps, which need no collective (each worker scores
    the whole validation set); one all-reduce carries the stop a callback
    asked for and the chief's decision to checkpoint (at most every
    `every_seconds` by the chief's clock, and always after the last epoch).
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, checkpoint_dir: str | None,
                 every_seconds: float = EVERY_SECONDS):
        self.model = model
        self.strategy = strategy
        self.chief = is_chief(strategy)
        self.every_seconds = every_seconds
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

    def _steps(self, step_fn, *, mean: bool):
        """A `tf.function(iterator, steps)`: the model's metrics reset, `step_fn` on `steps` batches; with `mean`, its
        figures averaged over the workers."""
        strategy = self.strategy

        @tf.function  # traced once, called twice below: the step's graph is built once
        def one(iterator):
            logs = strategy.run(step_fn, args=(next(iterator),))
            # Metric results are this worker's own (Keras' metric variables are synchronized on read): take one.
            return {key: strategy.experimental_local_results(value)[0] for key, value in logs.items()}

        def over_workers(logs):
            keys = sorted(logs)
            values = tf.stack([tf.cast(logs[key], tf.float32) for key in keys])
            total = strategy.run(_sum, args=(values,))
            total = strategy.experimental_local_results(total)[0] / strategy.num_replicas_in_sync
            return {key: total[i] for i, key in enumerate(keys)}

        @tf.function
        def run(iterator, steps):
            # Each worker zeroes its own metric variables (replica context): Keras' reset outside one reads every
            # synchronized-on-read variable over the workers first, an all-reduce per variable and epoch.
            strategy.run(self.model.reset_metrics)
            logs = one(iterator)
            for _ in tf.range(steps - 1):
                logs = one(iterator)
            return over_workers(logs) if mean else logs

        return run

    def _validation(self, dataset: tf.data.Dataset) -> tuple[Iterator, int]:
        """An endless iterator over the whole of `dataset` on every worker, and its batches per pass.

        `distribute_datasets_from_function` neither shards nor rebatches (its
        datasets' auto-shard policy is not applied), so every worker scores
        the whole validation split.
        """
        whole = dataset.repeat()
        return iter(self.strategy.distribute_datasets_from_function(lambda _: whole)), _batches(dataset)

    def _start_epoch(self, callbacks: Sequence[keras.callbacks.Callback], initial_epoch: int) -> int:
        """The first epoch to train: after what `checkpoint_dir` or a `BackupAndRestore` callback restored."""
        restored = [restore(c, self.model) if c.initial_epoch is None else c.initial_epoch
                    for c in callbacks if isinstance(c, BackupAndRestore)]
        return max([int(self.epoch.numpy()), initial_epoch, *restored])

    def fit(self, dataset, *, epochs, validation_data, callbacks, verbose, steps_per_epoch=None,
            initial_epoch=0, worker_callbacks=()) -> keras.callbacks.History:
        model = self.model
        start = self._start_epoch(callbacks, initial_epoch)
        history = keras.callbacks.History()
        callbacks = keras.callbacks.CallbackList(
            [*(callbacks if self.chief else ()), *worker_callbacks], add_history=False,
            add_progbar=self.chief and verbose != 0,
            model=model, verbose=1 if verbose == "auto" else verbose, epochs=epochs, steps=steps_per_epoch,
        )
        history.set_model(model)
        history.on_train_begin()
        train, test = self._steps(model.train_step, mean=True), self._steps(model.test_step, mean=False)
        distributed = self.strategy.experimental_distribute_dataset(shard_by_data(dataset))
        steps = steps_per_epoch or _batches(dataset)  # a worker takes its share of every global batch
        stream = iter(distributed) if steps_per_epoch else None
        validation = self._validation(validation_data) if validation_data is not None else None
        model.stop_training = False
        last_save = time.monotonic()
        with _OutsideStrategy() as outside:  # the chief's callbacks (the others have none)
            outside.call(callbacks.on_train_begin)
            for epoch in range(start, epochs):
                outside.call(callbacks.on_epoch_begin, epoch)
                outside.call(callbacks.on_train_batch_begin, 0)
                logs = {key: float(value) for key, value in train(iter(distributed) if stream is None else stream, steps).items()}
                outside.call(callbacks.on_train_batch_end, steps - 1, logs)  # one call per epoch, as Keras' steps_per_execution
                if validation is not None:
                    logs.update({f"val_{key}": float(value) for key, value in test(*validation).items()})
                self.epoch.assign(epoch + 1)
                outside.call(callbacks.on_epoch_end, epoch, logs)
                history.on_epoch_end(epoch, logs)
                # One all-reduce: a stop asked on any worker (a callback on the chief), and the chief's clock saying
                # that a checkpoint is due (the last epoch's always is).
                due = self.chief and (time.monotonic() - last_save >= self.every_seconds or epoch + 1 == epochs)
                stop, save = _sum_over_workers([model.stop_training, due], self.strategy) > 0
                if self.manager is not None and (save or stop):
                    self.manager.save()
                    last_save = time.monotonic()
                if stop:  # a callback on the chief stops every worker
                    model.stop_training = True
                    break
            outside.call(callbacks.on_train_end)
        if self.manager is not None and not self.chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
        iterators = [stream, validation]
        del stream, validation
        _release(iterators)
        return history


def _release(objects: list) -> None:
    """Drop the last references to `objects` (a fit's distributed iterators) in a thread of their own.

    Deleting the iterators at the end of a fit under `MultiWorkerMirroredStrategy`
    blocked whichever thread deleted them for 0.2-7.5 s (two workers on
    loopback, the default run's stages); left to a thread of their own while
    the run goes on, they are deleted in about 15 ms. Not a daemon thread: the
    interpreter waits for it before it shuts down (a daemon thread still inside
    TensorFlow at exit is the likeliest cause of a worker's SIGABRT in CI,
    "exception not rethrown": Python ends such a thread with a forced unwind).
    """
    threading.Thread(target=objects.clear, name="keras_team_release_iterators").start()


_SUMMERS: dict[tf.distribute.Strategy, tf.types.experimental.PolymorphicFunction] = {}  # one traced sum per strategy


def _sum_over_workers(values, strategy: tf.distribute.Strategy) -> np.ndarray:
    """`values` (numbers, bools or an array) as a float64 vector summed over the workers: one all-reduce.

    Traced once per strategy, for every length (TensorFlow warned of
    retracing when each broadcast of another model's variables traced its
    own); `strategy.run` called eagerly would cost more, and TensorFlow warns
    of that too.
    """
    if strategy not in _SUMMERS:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float64)])
        def total(vector):
            return strategy.experimental_local_results(strategy.run(_sum, args=(vector,)))[0]

        _SUMMERS[strategy] = total
    return _SUMMERS[strategy](tf.constant(np.asarray(values, "float64").ravel())).numpy()


def broadcast(values: Sequence, strategy: tf.distribute.Strategy | None = None) -> list[np.ndarray]:
    """The chief's `values` (arrays of any shapes, numbers) on every worker, through one all-reduce; unchanged on one machine.

    The others contribute zeros (whatever they pass, of the same shapes),
    so every worker receives the chief's numbers bit for bit (float64 holds
    float32 and integers below 2**53 exactly). For what is cheaper computed
    by the chief alone than in step on every worker, e.g. a linear probe.

    Example:
        >>> broadcast([np.ones((2, 2), "float32"), 3])
        [array([[1., 1.],
               [1., 1.]], dtype=float32), array(3)]
    """
    arrays = [np.asarray(v) for v in values]
    strategy = strategy or tf.distribute.get_strategy()
    if not _is_multi_worker(strategy):
        return arrays
    flat = np.concatenate([a.astype("float64").ravel() for a in arrays]) if arrays else np.zeros(0)
    if not is_chief(strategy):
        flat = np.zeros_like(flat)
    total, out, at = _sum_over_workers(flat, strategy), [], 0
    for a in arrays:
        out.append(total[at:at + a.size].reshape(a.shape).astype(a.dtype))
        at += a.size
    return out


def fit_on_chief(model: keras.Model, fit: Callable[[keras.Model], Any],
                 strategy: tf.distribute.Strategy | None = None) -> Any:
    """`fit(model)`; on several workers, the chief alone runs it on a local copy and every worker gets the outcome.

    For small models (a probe, a follower on cached taps), where data
    parallelism gains nothing and every step's collective round trip costs
    more than the step. Under `MultiWorkerMirroredStrategy` every worker
    copies `model` outside the strategy (its variables, random seed
    states included, so dropout draws what one process draws); the chief
    calls `fit` on its copy, as one process would on `model` (with its
    callbacks and checkpoints: a `keras_team.checkpoints.BackupAndRestore`
    among them resumes a restarted chief); then two all-reduces to which the
    others add zeros (`broadcast`) give every worker the copy's variables,
    bit for bit, and `fit`'s result. One worker: `fit(model)` itself.

    Args:
        model: the model to train (its variables are set to the fitted ones).
        fit: trains the model it is given (compiling it: a copy is not
            compiled) and returns what every worker needs to know, JSON-able
            (e.g. `history.history`).
        strategy: the strategy `model` was built under (default: its own).

    Returns:
        What `fit` returned on the chief (decoded from JSON on the others).

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> def fit(m):
        ...     m.compile("sgd", "mse")
        ...     return m.fit(np.ones((4, 3)), np.ones(4), epochs=2, verbose=0).history["loss"]
        >>> len(fit_on_chief(model, fit))
        2
    """
    strategy = strategy or strategy_of(model)
    if not _is_multi_worker(strategy):
        return fit(model)
    chief = is_chief(strategy)
    with _OutsideStrategy() as outside:
        local = outside.call(_local_copy, model)  # on every worker: they draw the same Python random numbers
        result = outside.call(fit, local) if chief else None
    sent = np.frombuffer(json.dumps(result).encode(), np.uint8) if chief else None
    (size,) = broadcast([0 if sent is None else sent.size], strategy)  # the others learn the result's length
    if sent is None:
        sent = np.zeros(int(size), np.uint8)
    *values, received = broadcast([*(np.asarray(v) for v in local.variables), sent], strategy)
    for variable, value in zip(model.variables, values):
        variable.assign(value)
    return json.loads(received.tobytes())


def _local_copy(model: keras.Model) -> keras.Model:
    """A clone of `model` (made in this thread, so out of the strategy if called outside it) holding its variables' values."""
    local = keras.models.clone_model(model)
    if [v.shape for v in local.variables] != [v.shape for v in model.variables]:
        raise KerasTeamError("model", model.name, "a model that keras.models.clone_model copies with the same "
                             "variables, to be fitted on the chief")
    for copy, variable in zip(local.variables, model.variables):
        copy.assign(np.asarray(variable))
    return local


def _sum(value: tf.Tensor) -> tf.Tensor:
    """`value` summed over every replica (in a replica context; the copy places it on this replica's device)."""
    return tf.distribute.get_replica_context().all_reduce("SUM", tf.identity(value))


def _batches(dataset: tf.data.Dataset) -> int:
    """The batches of one pass over `dataset` (counted once when TensorFlow cannot tell)."""
    count = int(dataset.cardinality())
    if count == tf.data.INFINITE_CARDINALITY:
        raise KerasTeamError("steps_per_epoch", None, "a number of batches per epoch for an endless dataset")
    if count == tf.data.UNKNOWN_CARDINALITY:
        count = int(dataset.reduce(0, lambda n, _: n + 1))
    return count
