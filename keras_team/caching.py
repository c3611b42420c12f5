"""Train a follower on cached taps: the frozen leaders run once, not every batch.

The write-up recomputes the frozen leader for every batch of every epoch.
Here the leaders' taps are computed by calling them in inference mode (as
inside the `Team`), batch by batch, in one pass over the data, and the follower's own
sub-model (`Team.follower_graphs[name]`, the same weights the team uses) is
fitted on them with `model.fit`.

Memory: taps are stored in memory as float32 up to `FLOAT16_ABOVE_BYTES`
and as float16 above it (``dtype="auto"``); with ``directory=...`` they are
written there and read back memory-mapped, so the cache costs disk, not RAM.
Batches are gathered from the cache by index (`cached_batches`: only the
indices go through `tf.data`): no copy of the cache and no shuffle buffer.

Augmentation: the taps of an augmenting dataset hold one augmented view per
pass; ``views=k`` caches k passes, so the follower sees k augmented views of
every example (a dataset that does not augment gives k identical copies).

Example:
    >>> task = keras_team.data.digits(classes=[0, 1, 2], shots=10)
    >>> leader = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 3), keep=3,
    ...                              head=keras_team.heads.dense(3))
    >>> team = keras_team.Team(leader, [keras_team.Follower(keras_team.zoo.mlp(3), tap="logits")])
    >>> history = fit_follower(team, "mlp", task.dataset("train"), epochs=2, verbose=0)
    >>> len(history.history["loss"])
    2
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_team import graph
from keras_team.checkpoints import BackupAndRestore
from keras_team.cuts import cut_points
from keras_team.distribute import fit as distributed_fit, fit_on_chief, global_batch_size, restore
from keras_team.errors import KerasTeamError
from keras_team.files import atomic_path, is_out_of_space, needing, remove_temporaries
from keras_team.heads import LOSS
from keras_team.layers import InferenceMode
from keras_team.taps import tap_key
from keras_team.team import Team
from keras_team.transfers import Transferred

# Inference batch of the caching pass (a direct call of the frozen model in inference mode): batch size does
# not change a frozen leader's outputs, and larger batches cost fewer calls.
CACHE_BATCH = 256
# In-memory caches whose float32 size would exceed this are kept as float16.
FLOAT16_ABOVE_BYTES = 1 << 30
DTYPES = ("auto", "float32", "float16")


class TapCache(NamedTuple):
    """A follower's inputs computed once: ``inputs`` keyed like its graph's inputs, and ``labels``.

    Arrays are numpy (memory-mapped when cached to a directory); unpack as
    ``inputs, labels = cache``.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray

    def select(self, keys: Sequence[str]) -> TapCache:
        """The same rows, only the inputs named by `keys` (a cache of several followers -> one follower's)."""
        missing = [key for key in keys if key not in self.inputs]
        if missing:
            raise KerasTeamError("cache", ", ".join(missing),
                                 f"a cache holding these inputs (it holds {', '.join(self.inputs)})")
        return TapCache({key: self.inputs[key] for key in keys}, self.labels)


def _follower(team: Team, name: str):
    for follower in team.followers:
        if follower.name == name:
            return follower
    raise KerasTeamError("follower", name, f"one of the team's followers: {', '.join(f.name for f in team.followers)}")


def follower_keys(team: Team, name: str) -> list[str]:
    """The names of follower `name`'s inputs in a `TapCache`: ``<leader>_<tap>`` for each leader and tap it reads.

    Example:
        >>> team = keras_team.Team(keras_team.zoo.seed_cnn((8, 8, 1), 3),
        ...                        [keras_team.Follower(keras_team.zoo.mlp(3), tap="probs")])
        >>> follower_keys(team, "mlp")  # probs are read from the logits
        ['leader_logits']
    """
    follower = _follower(team, name)
    return [f"{leader}_{key}" for leader in follower.leaders or team.leaders for key in _keys(follower)]


def _keys(follower) -> list[str]:
    return sorted({tap_key(tap) for tap in follower.taps_needed()})


def _tap_reader(team: Team, wanted: dict[str, list[str]]) -> keras.Model:
    """One model computing the taps `wanted` (leader -> tap keys) as ``<leader>_<key>`` (sharing the leaders' layers)."""
    spec = team.inputs[0]
    inputs = keras.Input(shape=spec.shape[1:], dtype=spec.dtype)
    outputs = {}
    for leader, keys in wanted.items():
        tapped = team.tap_models[leader](inputs)
        outputs.update({f"{leader}_{key}": tapped[key] for key in keys})
    return keras.Model(inputs, outputs, name="tap_reader")


class _Store:
    """Appends chunks of taps, in memory (float32, float16 past a size) or as files under a directory.

    Files are written to temporary siblings (``.tmp-*``) and renamed into
    place by `finish` only once whole, so a kill mid-write never leaves a
    half ``<input>.bin`` or ``labels.npy``; the next cache into the directory
    removes the leftovers. `discard` drops the temporaries of a failed pass.
    """

    def __init__(self, keys: list[str], directory: str | None, dtype: str, field: str):
        self.directory, self.dtype, self.field = directory, dtype, field
        self.half = dtype == "float16"
        self.chunks: dict[str, list[np.ndarray]] = {key: [] for key in keys}
        self.shapes: dict[str, tuple] = {}
        self.labels: list[np.ndarray] = []
        self.float32_bytes = 0
        self.written = 0
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
            remove_temporaries(directory)  # what a killed cache left
            self.writing = contextlib.ExitStack()  # each file's atomic write, committed by `finish`
            self.files = {key: open(self.writing.enter_context(atomic_path(self._path(f"{key}.bin"))), "wb")
                          for key in keys}

    def _path(self, name: str) -> pathlib.Path:
        return pathlib.Path(self.directory) / name

    def _narrow(self, array: np.ndarray) -> np.ndarray:
        half = array.astype(np.float16)
        if not np.isfinite(half).all() and np.isfinite(array).all():
            raise KerasTeamError(self.field, "float16", "dtype='float32' or a directory: the taps exceed float16's range")
        return half

    def add(self, outputs: dict[str, np.ndarray], labels: np.ndarray) -> None:
        self.labels.append(labels)
        self.float32_bytes += sum(np.asarray(array).size * 4 for array in outputs.values())
        if self.dtype == "auto" and self.directory is None and not self.half and self.float32_bytes > FLOAT16_ABOVE_BYTES:
            self.half = True  # from now on, and for what is held already
            self.chunks = {key: [self._narrow(c) for c in chunks] for key, chunks in self.chunks.items()}
        for key, array in outputs.items():
            array = np.asarray(array)
            self.shapes[key] = array.shape[1:]
            array = self._narrow(array) if self.half else array.astype(np.float32, copy=False)
            if self.directory is None:
                self.chunks[key].append(array)
            else:
                self._write(self.files[key], np.ascontiguousarray(array).tobytes())

    def _write(self, file, data: bytes) -> None:
        try:
            file.write(data)
        except OSError as error:
            if not is_out_of_space(error):
                raise
            error.filename = self.directory
            raise needing(error, self.written + len(data), at_least=True) from error
        self.written += len(data)

    def discard(self, error: BaseException) -> None:
        """Drop the temporary files of a pass that failed with `error`."""
        if self.directory is not None:
            for file in self.files.values():
                file.close()
            self.writing.__exit__(type(error), error, error.__traceback__)

    def finish(self) -> TapCache:
        labels = np.concatenate(self.labels)
        if self.directory is None:
            return TapCache({key: _join(chunks) for key, chunks in self.chunks.items()}, labels)
        for file in self.files.values():
            file.close()
        with atomic_path(self._path("labels.npy")) as tmp:
            np.save(tmp, labels)
        self.writing.close()  # every file synced and renamed into place
        inputs = {}
        dtype = np.float16 if self.half else np.float32
        for key in self.files:
            shape = (len(labels), *self.shapes.get(key, ()))
            path = self._path(f"{key}.bin")
            inputs[key] = np.memmap(path, dtype=dtype, mode="r", shape=shape) if len(labels) else np.zeros(shape, dtype)
        return TapCache(inputs, labels)


def _join(chunks: list[np.ndarray]) -> np.ndarray:
    """np.concatenate that frees each chunk once copied: the peak is one array plus one chunk."""
    joined = np.empty((sum(len(chunk) for chunk in chunks), *chunks[0].shape[1:]), chunks[0].dtype)
    start = 0
    while chunks:
        chunk = chunks.pop(0)
        joined[start : start + len(chunk)] = chunk
        start += len(chunk)
    return joined


def cache_taps(
    team: Team,
    name: str | Sequence[str],
    dataset: tf.data.Dataset,
    *,
    views: int = 1,
    directory: str | os.PathLike | None = None,
    dtype: str = "auto",
    verbose: int = 1,
) -> TapCache:
    """The follower's inputs and the labels, from `views` passes of the leaders over `dataset`.

    Args:
        team: a built `Team`.
        name: the follower whose inputs to compute, or several followers: one
            pass computes all their inputs (`TapCache.select` with
            `follower_keys` gives each its own), so followers reading the
            same taps run the leaders once, not once each.
        dataset: batched `(x, y)`; its order is kept.
        views: passes over `dataset` (each pass of an augmenting dataset is
            a new augmented view); the cache holds ``views * len`` examples.
        directory: write the taps there (``<input>.bin``, ``labels.npy``,
            each renamed into place once whole) and return them
            memory-mapped; None keeps them in memory.
        dtype: "float32", "float16", or "auto" (float16 for an in-memory
            cache larger than `FLOAT16_ABOVE_BYTES` as float32).
        verbose: 1 shows a progress bar, 2 one line at the end, 0 nothing.

    Returns:
        A `TapCache` ``(inputs, labels)``.

    Example:
        >>> team = keras_team.Team(keras_team.zoo.seed_cnn((8, 8, 1), 3),
        ...                        [keras_team.Follower(keras_team.zoo.mlp(3), tap="features")])
        >>> data = tf.data.Dataset.from_tensor_slices((np.zeros((10, 8, 8, 1)), np.zeros(10))).batch(4)
        >>> inputs, labels = cache_taps(team, "mlp", data, views=2, verbose=0)
        >>> inputs["leader_features"].shape, labels.shape  # the input of the leader's last layer
        ((20, 84), (20,))
    """
    names = [name] if isinstance(name, str) else list(name)
    followers = [_follower(team, each) for each in names]
    if not followers:
        raise KerasTeamError("name", "[]", "a follower's name, or a list of at least one")
    if not isinstance(views, int) or views < 1:
        raise KerasTeamError("views", views, "an int >= 1")
    if dtype not in DTYPES:
        raise KerasTeamError("dtype", dtype, f"one of {', '.join(DTYPES)}")
    wanted = {leader: sorted({key for f in followers if leader in (f.leaders or team.leaders) for key in _keys(f)})
              for leader in team.leaders}  # each leader's taps that some follower reads
    wanted = {leader: keys for leader, keys in wanted.items() if keys}
    reader = _tap_reader(team, wanted)
    # Called directly in inference mode, as `cache_features` calls the frozen part: `predict` traced a graph per
    # call (a split, a view, a last partial batch), which cost more than the taps and warned of retracing.
    return _cache_passes(lambda x: keras.tree.map_structure(keras.ops.convert_to_numpy, reader(x, training=False)),
                         [f"{leader}_{key}" for leader, keys in wanted.items() for key in keys], dataset, views=views,
                         directory=directory, dtype=dtype, verbose=verbose,
                         what=f"follower {names[0]!r}" if len(names) == 1 else f"followers {', '.join(names)}")


def follower_taps(team: Team, name: str, data: tf.data.Dataset | TapCache, **kwargs) -> TapCache:
    """Follower `name`'s `TapCache` of `data`: cached by `cache_taps` (with `kwargs`), or, when `data` is already
    a `TapCache` (of this follower or of several), its inputs selected (`follower_keys`).

    Example:
        >>> team = keras_team.Team(keras_team.zoo.seed_cnn((8, 8, 1), 3),
        ...                        [keras_team.Follower(keras_team.zoo.mlp(3), name=name, tap=tap)
        ...                         for name, tap in (("a", "features"), ("b", "logits"))])
        >>> data = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 1)), np.zeros(4))).batch(2)
        >>> shared = cache_taps(team, ["a", "b"], data, verbose=0)  # the leader runs once for both
        >>> sorted(shared.inputs), list(follower_taps(team, "b", shared).inputs)
        (['leader_features', 'leader_logits'], ['leader_logits'])
    """
    if isinstance(data, TapCache):
        return data.select(follower_keys(team, name))
    return cache_taps(team, name, data, **kwargs)


def _cache_passes(compute, keys: list[str], dataset: tf.data.Dataset, *, views: int, directory, dtype: str,
                  verbose: int, what: str) -> TapCache:
    """`views` passes of `compute` (a batch of inputs -> a dict of arrays keyed by `keys`) over `dataset` in batches of `CACHE_BATCH`, stored by `_Store`."""
    store = _Store(keys, directory and os.fspath(directory), dtype, "dtype")
    progress = keras.utils.Progbar(None, verbose=verbose, unit_name="example")
    seen = 0
    try:
        for _ in range(views):
            for x, y in dataset.unbatch().batch(CACHE_BATCH):
                store.add(compute(x), np.asarray(y))
                seen += len(y)
                progress.update(seen)
        if not seen:
            raise KerasTeamError("dataset", "0 examples", f"at least one example to cache for {what}")
        progress.update(seen, finalize=True)
        return store.finish()
    except BaseException as error:
        store.discard(error)
        raise


def cached_batches(cache: TapCache, *, outputs: int, batch_size: int, seed: int | None = None) -> tf.data.Dataset:
    """Batches of a `TapCache` for `model.fit`, gathered by index (reshuffled every epoch when seeded).

    Only the example indices go through `tf.data` (shuffled there, seeded);
    each batch's rows are gathered from the cache's arrays (memory-mapped or
    not): no copy of the cache, no shuffle buffer of examples. Labels repeat
    once per output of the follower graph.

    Example:
        >>> cache = TapCache({"leader_features": np.arange(6.0).reshape(3, 2)}, np.array([0, 1, 2]))
        >>> x, y = list(cached_batches(cache, outputs=1, batch_size=2))[1]
        >>> x["leader_features"].numpy().tolist(), y[0].numpy().tolist()
        ([[4.0, 5.0]], [2])
    """
    order = tf.data.Dataset.range(len(cache.labels))
    if seed is not None:
        order = order.shuffle(len(cache.labels), seed=seed, reshuffle_each_iteration=True)
    return order.batch(batch_size).map(_gatherer(cache, outputs)).prefetch(tf.data.AUTOTUNE)


def _gatherer(cache: TapCache, outputs: int):
    """Batch of row indices -> ``(inputs, (labels,) * outputs)`` read from the cache's arrays."""
    keys = list(cache.inputs)
    labels = np.asarray(cache.labels)

    def gather(rows: np.ndarray):
        # Read in file order (a memory map reads forward), served in the batch's order (dropout masks are per row).
        order = np.argsort(rows, kind="stable")
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        ordered = rows[order]
        return (*(np.asarray(cache.inputs[key][ordered], dtype=np.float32)[back] for key in keys), labels[rows])

    def batch(rows):
        *inputs, y = tf.numpy_function(gather, [rows], [tf.float32] * len(keys) + [tf.as_dtype(labels.dtype)])
        for key, tensor in zip(keys, inputs):
            tensor.set_shape((None, *cache.inputs[key].shape[1:]))
        y.set_shape((None,))
        return dict(zip(keys, inputs)), (y,) * outputs

    return batch


def fit_follower(
    team: Team,
    name: str,
    train: tf.data.Dataset | TapCache,
    validation: tf.data.Dataset | TapCache | None = None,
    *,
    epochs: int = 10,
    optimizer: keras.optimizers.Optimizer | str = "adam",
    batch_size: int = 32,
    seed: int = 0,
    views: int = 1,
    directory: str | os.PathLike | None = None,
    dtype: str = "auto",
    callbacks: list | None = None,
    verbose: int | str = "auto",
) -> keras.callbacks.History:
    """Fit follower `name` on its leaders' taps, computed once.

    The labels are used once per follower output (one per leader with
    ``combine="each"``), so the loss is the same sum the team trains on.

    Args:
        team: the team the follower belongs to (its weights are updated).
        name: follower name.
        train: batched `(x, y)` of raw inputs, or their taps already cached
            (a `TapCache` holding the follower's inputs, e.g. one
            `cache_taps` of several followers); shuffled every epoch,
            seeded by `seed`.
        validation: optional batched `(x, y)` (or `TapCache`) for `validation_data`.
        views: passes over `train` to cache (augmented views, see the module).
        directory: cache on disk there (``train/``, ``validation/``).
        dtype: storage of the cache, as for `cache_taps`.
        epochs, optimizer, batch_size, callbacks, verbose: as for `model.fit`
            (on several workers the chief alone fits, with its callbacks, as
            one process would: `keras_team.distribute.fit_on_chief`).

    Example:
        >>> team = keras_team.Team(keras_team.zoo.seed_cnn((8, 8, 1), 3),
        ...                        [keras_team.Follower(keras_team.zoo.mlp(3), tap="probs")])
        >>> data = tf.data.Dataset.from_tensor_slices((np.zeros((10, 8, 8, 1)), np.arange(10) % 3)).batch(4)
        >>> history = fit_follower(team, "mlp", data, data, epochs=1, dtype="float16", verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'loss', 'val_accuracy', 'val_loss']
    """
    follower = _follower(team, name)
    graph = team.follower_graphs[name]
    outputs = len(graph.outputs)
    defaults = team.loss_weight_defaults()
    progress = verbose if verbose in (0, 2) else 1

    def cached(data, split, **kwargs):
        where = None if directory is None else os.path.join(directory, split)
        return follower_taps(team, name, data, directory=where, dtype=dtype, verbose=progress, **kwargs)

    def batches(cache, **kwargs):  # a batch size every replica of the fitting strategy can share
        return cached_batches(cache, outputs=outputs, batch_size=global_batch_size(batch_size, len(cache.labels)), **kwargs)

    if isinstance(train, TapCache) and views != 1:
        raise KerasTeamError("views", views, "1 when train is a TapCache (its passes are cached already)")
    train_cache = cached(train, "train", views=views)
    validation_cache = None if validation is None else cached(validation, "validation")

    def fit(model: keras.Model) -> dict:
        train_batches = batches(train_cache, seed=seed)
        validation_batches = None if validation_cache is None else batches(validation_cache)
        model.compile(
            # A copy fitted out of the strategy takes an optimizer of its own (Keras keeps the strategy it was made under).
            optimizer=optimizer if model is graph else _fresh(optimizer),
            loss=[LOSS] * outputs,
            loss_weights=[defaults[out] for out in follower.output_names(list(follower.leaders or team.leaders))],
            # A metric object holds state: one per output, or every output reports the pooled figure.
            metrics=[[keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for _ in range(outputs)],
        )
        # The batches reshuffle themselves, seeded.
        history = distributed_fit(model, train_batches, validation_data=validation_batches, epochs=epochs,
                                  callbacks=callbacks or (), verbose=verbose)
        return {"epoch": history.epoch, "history": history.history}

    # On several workers the chief alone fits (a small model: each step's collective would cost more than the step).
    return _history(graph, fit_on_chief(graph, fit))


def _fresh(optimizer: keras.optimizers.Optimizer | str) -> keras.optimizers.Optimizer | str:
    """A new optimizer configured as `optimizer` (a name stays a name)."""
    return optimizer if isinstance(optimizer, str) else type(optimizer).from_config(optimizer.get_config())


def _history(model: keras.Model, fitted: dict) -> keras.callbacks.History:
    """The `History` of a fit, from its epochs and figures."""
    history = keras.callbacks.History()
    history.set_model(model)
    history.epoch, history.history = fitted["epoch"], fitted["history"]
    return history


# --- the frozen part of a transferred model, computed once ---------------------------------------------------------
EVAL_BATCH = 1024  # the validation batch of an in-memory feature cache: few steps per epoch
FEATURES = "features"  # the key of the cached boundary output, and the name of the trained part's input


class FrozenSplit(NamedTuple):
    """A `Transferred` model cut at its freeze boundary (`split_frozen`).

    Attributes:
        bottom: the kept part below the boundary: frozen, run once in
            inference mode to fill the cache (its layers are the model's own).
        top: what trains: the body's layers above the boundary (in inference
            mode, as in the model) and the head, taking the bottom's output as
            its input ``"features"``; its layers are the model's own, so fitting
            it trains the model.
        boundary: the name of the body's layer whose output is cached.
    """

    bottom: keras.Model
    top: keras.Model
    boundary: str


def split_frozen(model: Transferred, *, below: Sequence[keras.Layer] = ()) -> FrozenSplit | None:
    """Cut a transferred model at its freeze boundary: the highest cut of its body with nothing trainable below.

    With the whole body frozen (the transfer's first phase) the boundary is
    the body's output and the top is the head; after `keras_team.unfreeze`
    it is the cut just below the lowest unfrozen layer, and the top holds
    the unfrozen blocks too. A nested model in the body is one call of its
    graph: partly unfrozen, the boundary falls below it. None when nothing
    below the first trainable layer can be cut off (nothing to cache).

    Layers in `below` (frozen ones a later fine-tuning will train, as
    `keras_team.to_unfreeze` lists them) count as trainable for the
    choice of the boundary only: it falls under them too, and they stay
    frozen in the top, so the fine-tuning can reuse the same cache.

    Example:
        >>> model = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=3, head=keras_team.heads.dense(3))
        >>> split_frozen(model, below=keras_team.to_unfreeze(model, top=1)).boundary
        'flatten'
        >>> split_frozen(model).boundary, split_frozen(keras_team.unfreeze(model, top=1)).boundary
        ('fc1', 'flatten')
    """
    if not isinstance(model, Transferred) or not model.inference_mode:
        raise KerasTeamError("model", getattr(model, "name", model),
                             "a keras_team.Transferred model whose body runs in inference mode (keras_team.transfer)")
    body = model.body
    trainable = {id(w) for w in model.trainable_weights} | {id(w) for layer in below for w in layer.weights}
    calls = graph.layer_calls(body)
    trained, below = False, []  # below[p]: whether any call up to position p trains
    for call in calls:
        trained = trained or any(id(w) in trainable for w in getattr(call.operation, "weights", ()))
        below.append(trained)
    frozen = [cut for cut in cut_points(body) if not below[cut.position]]
    if not frozen:
        return None
    cut = frozen[-1]
    boundary = calls[cut.position].outputs[0]
    bottom = keras.Model(body.inputs, boundary, name="frozen")
    features = keras.Input(shape=tuple(boundary.shape[1:]), name=FEATURES)
    if cut.position == len(calls) - 1:  # the whole body is frozen: the head alone trains
        outputs = model.head(features)
    else:  # the unfrozen layers above the boundary, sharing the model's layers, in inference mode as there
        above = keras.Model([boundary], body.outputs[0], name="unfrozen")
        outputs = model.head(InferenceMode(above, name="unfrozen_body")(features))
    top = keras.Model(features, outputs, name=f"{model.name}_top")
    if model.given_dtype is not None:
        top.dtype_policy = model.dtype_policy  # `compile` reads it (loss scaling), as for the model
    return FrozenSplit(bottom, top, calls[cut.position].operation.name)


def cache_features(bottom: keras.Model, dataset: tf.data.Dataset, *, views: int = 1,
                   directory: str | os.PathLike | None = None, dtype: str = "auto", verbose: int = 0) -> TapCache:
    """`bottom`'s outputs (inference mode) over `views` passes of `dataset`, as a `TapCache` keyed ``"features"``.

    The tap cache's storage (`cache_taps`): in memory, float16 past
    `FLOAT16_ABOVE_BYTES`, or memory-mapped files under `directory`.

    Example:
        >>> bottom = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> data = tf.data.Dataset.from_tensor_slices((np.ones((5, 3)), np.arange(5))).batch(2)
        >>> inputs, labels = cache_features(bottom, data, views=2)
        >>> inputs["features"].shape, labels.tolist()
        ((10, 2), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    """
    if not isinstance(views, int) or isinstance(views, bool) or views < 1:
        raise KerasTeamError("views", views, "an int >= 1")
    if dtype not in DTYPES:
        raise KerasTeamError("dtype", dtype, f"one of {', '.join(DTYPES)}")
    # Called directly, batch by batch, in inference mode: no graph to trace (`predict` traced one per
    # call, more than the frozen part's forward costs on a few-shot split); the batches are large enough
    # for eager dispatch to cost little beside the convolutions.
    return _cache_passes(lambda x: {FEATURES: keras.ops.convert_to_numpy(bottom(x, training=False))}, [FEATURES],
                         dataset, views=views, directory=directory, dtype=dtype, verbose=verbose,
                         what="the frozen part")


def cached_epochs(cache: TapCache, *, batch_size: int, seed: int | None, views: int = 1,
                  start: int = 0) -> tuple[tf.data.Dataset, int]:
    """The training stream of a feature cache, one epoch after another from epoch `start`, and its steps per epoch.

    Each epoch reads every example of one view once (epoch e: view e mod
    `views`), reshuffled every epoch as ``dataset.shuffle(n, seed,
    reshuffle_each_iteration=True).batch(batch_size).repeat()`` orders a
    dataset of n examples: a `keras_team.data.Task` with that seed serves
    its training split in the same order.

    Example:
        >>> cache = TapCache({"features": np.arange(4.0)[:, None]}, np.arange(4))
        >>> stream, steps = cached_epochs(cache, batch_size=2, seed=None, views=2)
        >>> steps, [y.numpy().tolist() for _, y in stream.take(4)]
        (1, [[0, 1], [2, 3], [0, 1], [2, 3]])
    """
    examples = len(cache.labels) // views
    steps = math.ceil(examples / batch_size)
    order = tf.data.Dataset.range(examples)
    if seed is not None:
        order = order.shuffle(examples, seed=seed, reshuffle_each_iteration=True)
    order = order.batch(batch_size).repeat()
    if views > 1:
        order = order.enumerate().map(lambda j, rows: rows + (j // steps) % views * examples)
    return order.skip(start * steps).map(_feature_gatherer(cache)).prefetch(tf.data.AUTOTUNE), steps


def _feature_gatherer(cache: TapCache):
    """Batch of row indices -> ``(features, labels)``: a graph gather from an in-memory cache, a read of a mapped one."""
    features = cache.inputs[FEATURES]
    if isinstance(features, np.memmap):  # on disk: read only the batch's rows
        gather = _gatherer(cache, 1)
        return lambda rows: _features(*gather(rows))
    held, labels = tf.constant(features), tf.constant(cache.labels)  # in memory: no Python call per batch
    return lambda rows: (tf.cast(tf.gather(held, rows), tf.float32), tf.gather(labels, rows))


def _features(inputs: dict, labels: tuple):
    """A feature cache's batch as the trained part takes it: its one input, one label."""
    return inputs[FEATURES], labels[0]


def fit_transfer(
    model: Transferred,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None = None,
    *,
    epochs: int = 10,
    optimizer: keras.optimizers.Optimizer | str = "adam",
    loss=LOSS,
    metrics=("accuracy",),
    batch_size: int = 32,
    seed: int | None = 0,
    views: int = 1,
    directory: str | os.PathLike | None = None,
    dtype: str = "auto",
    callbacks: list | None = None,
    verbose: int | str = "auto",
    steps_per_execution: int | str = "auto",
    jit_compile: bool | str = "auto",
    below: Sequence[keras.Layer] = (),
    reuse: dict | None = None,
) -> keras.callbacks.History:
    """Fit a transferred model's trainable part on its frozen part's output, computed once.

    The frozen part below the freeze boundary (`split_frozen`: the whole body
    before fine-tuning, the blocks under the unfrozen ones after
    `keras_team.unfreeze`) runs once over `train` (`views` times: once per
    augmented view) and once over `validation`, in inference mode as in the
    model; `model.fit` then trains the part above on the cache. The model's
    weights are updated in place. With ``views=1`` and a `train` that does
    not augment, the result equals `model.fit` on ``train.unbatch()
    .shuffle(n, seed, reshuffle_each_iteration=True).batch(batch_size)
    .repeat()`` with ``steps_per_epoch`` (one stream of epochs, as a
    `keras_team.data.Task` seeded `seed` serves it to `keras-team run`) to
    float tolerance, for the frozen body's outputs do not depend on the
    epoch. (A `fit` that starts a new iterator every epoch draws other
    shuffles from the second epoch on.)

    A `keras_team.checkpoints.BackupAndRestore` among `callbacks` is
    restored first, and the fit resumes after its epoch with the shuffles an
    uninterrupted fit draws there. A model with nothing frozen below its
    trainable layers is fitted on `train` as it is.

    Args:
        model: a `keras_team.Transferred` model (`keras_team.transfer`), frozen
            or partly unfrozen.
        train: batched `(x, y)` of raw inputs, read in order (`views` passes).
        validation: optional batched `(x, y)`.
        epochs, optimizer, loss, metrics, callbacks, verbose, jit_compile: as for `compile` and `fit`.
        steps_per_execution: as for `compile`; "auto" trains a whole epoch of
            the cache per call into TensorFlow (1 under a `tf.distribute`
            strategy, and for a model with nothing to cache).
        batch_size: the global batch of the cached training stream.
        seed: seeds the reshuffle of every epoch (None: no shuffle).
        views: passes over `train` cached; epoch e reads pass e mod `views`.
        directory: cache on disk there (``train/``, ``validation/``), memory-mapped.
        dtype: storage of the cache, as for `cache_taps`.
        below: frozen layers a later fine-tuning will train
            (`keras_team.to_unfreeze`): the frozen part runs up to under
            them (`split_frozen(model, below=below)`, the fine-tuning's
            cache, put in `reuse`), then the frozen layers between run once
            over that cache for this fit's.
        reuse: a dict the caller keeps across fits of one model on the same
            `train`, `validation` and `views` (its transfer with `below`, then
            its fine-tuning): caches are kept there by boundary, and one
            found there is read instead of running the frozen part again.

    Example:
        >>> task = keras_team.data.digits(classes=[0, 1, 2], shots=10)
        >>> model = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 3), keep=3, head=keras_team.heads.dense(3))
        >>> history = fit_transfer(model, task.dataset("train"), task.dataset("validation"), epochs=2, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'loss', 'val_accuracy', 'val_loss']
    """
    split = split_frozen(model)
    callbacks = list(callbacks or ())
    options = {"loss": loss, "metrics": list(metrics), "steps_per_execution": steps_per_execution,
               "jit_compile": jit_compile}
    if split is None:  # nothing to cache
        model.compile(optimizer, **{**options, "steps_per_execution": 1 if steps_per_execution == "auto" else steps_per_execution})
        return distributed_fit(model, train, validation_data=validation, epochs=epochs, callbacks=callbacks,
                               verbose=verbose)
    progress = verbose if verbose in (0, 2) else 1

    under = split_frozen(model, below=below) if below else None  # where the fine-tuning will cut

    def cached(data, part, passes):
        if reuse is not None and (split.boundary, part, passes) in reuse:
            return reuse[split.boundary, part, passes]
        where = None if directory is None else os.path.join(directory, part)
        if under is None or under.boundary == split.boundary:
            return cache_features(split.bottom, data, views=passes, directory=where, dtype=dtype, verbose=progress)
        # The fine-tuning's cache first (kept for it), then the frozen layers between, once over it.
        low = cache_features(under.bottom, data, views=passes, dtype=dtype, verbose=progress,
                             directory=where and os.path.join(where, "under"))
        if reuse is not None:
            reuse[under.boundary, part, passes] = low
        between = keras.Model(under.bottom.outputs, split.bottom.outputs, name="between")
        rows = cached_batches(low, outputs=1, batch_size=CACHE_BATCH).map(_features)
        return cache_features(between, rows, directory=where, dtype=dtype, verbose=0)

    features = cached(train, "train", views)
    global_batch = global_batch_size(batch_size, len(features.labels) // views)
    if steps_per_execution == "auto":  # a whole epoch per call (Keras 3.15's multi-step loop fails under a strategy)
        steps_per_execution = 1 if tf.distribute.has_strategy() else math.ceil(len(features.labels) // views / global_batch)
    split.top.compile(optimizer, **{**options, "steps_per_execution": steps_per_execution})
    start = 0
    for callback in callbacks:  # positions the stream where a resumed fit starts
        if isinstance(callback, BackupAndRestore):
            start = max(start, restore(callback, split.top) if callback.initial_epoch is None else callback.initial_epoch)
    stream, steps = cached_epochs(features, batch_size=global_batch, seed=seed, views=views, start=start)
    validation_batches = None
    if validation is not None:
        held = cached(validation, "validation", 1)
        in_memory = not isinstance(held.inputs[FEATURES], np.memmap)
        size = min(len(held.labels), max(batch_size, EVAL_BATCH)) if in_memory else batch_size
        validation_batches = cached_batches(held, outputs=1, batch_size=global_batch_size(size, len(held.labels)))
        validation_batches = validation_batches.map(_features)
        if in_memory:  # few large batches, gathered once: each epoch's validation is a few steps
            validation_batches = validation_batches.cache()
    return distributed_fit(split.top, stream, steps_per_epoch=steps, validation_data=validation_batches,
                           epochs=epochs, callbacks=callbacks, verbose=verbose, initial_epoch=start)
