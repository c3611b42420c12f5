"""Features of a frozen cut, computed once and reused by every trial that uses the cut.

A search tries the same few cuts many times (and Hyperband every epoch
budget again); while the kept part is frozen its output on the same data is
the same, so the cut's features are computed once per
(kept weights, cut, data) and stored as float16 `.npy` files on disk (under
the tuner's project directory, so a resumed search reuses them and deleting
the search deletes them), read back memory-mapped; without a directory they
are kept in memory (up to `max_bytes`, the least recently used dropped
first), never in a temporary directory left behind. The key hashes the kept
part's weights and the examples' bytes, so a retrained leader, a fine-tuned
body (a Hyperband trial resumed after fine-tuning) or other data is a miss,
never a stale hit.

Example:
    >>> body = keras_team.body(keras_team.zoo.seed_cnn((8, 8, 1), 5), "pool2")
    >>> cache, x = FeatureCache(), np.zeros((3, 8, 8, 1), "uint8")
    >>> first = cache.features(body, x)     # computed: a miss
    >>> again = cache.features(body, x)     # read back: a hit
    >>> cache.hits, cache.misses, again.dtype
    (1, 1, dtype('float16'))
"""

from __future__ import annotations

import hashlib
import os
import pathlib

import keras
import numpy as np

from keras_team.files import atomic_path

# Inference batch of the caching pass (a frozen body's outputs do not depend on it).
PREDICT_BATCH = 256


def fingerprint_arrays(arrays, *extra: str) -> str:
    """A hex digest of arrays' shapes, dtypes and bytes (plus `extra` strings).

    Example:
        >>> fingerprint_arrays([np.zeros(3)]) == fingerprint_arrays([np.zeros(3)])
        True
        >>> fingerprint_arrays([np.zeros(3)]) == fingerprint_arrays([np.ones(3)])
        False
    """
    digest = hashlib.sha256()
    for text in extra:
        digest.update(text.encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()[:24]


class FeatureCache:
    """Disk store of a frozen body's features, keyed by (weights, cut, data).

    Args:
        directory: where the `.npy` files go (created on first use); None
            keeps the features in this object's memory.
        dtype: storage dtype; float16 halves memory and disk.
        max_bytes: in memory, the most bytes kept: past it the least
            recently used features are dropped (recomputed when asked
            again); None keeps everything.

    Attributes:
        hits, misses: lookups answered from the store / computed.

    Example:
        >>> cache = FeatureCache(dtype="float32")
        >>> body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> x = np.ones((4, 2), "float32")
        >>> cache.features(body, x).shape, cache.misses
        ((4, 3), 1)
        >>> _ = cache.features(body, x); cache.hits
        1
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, dtype: str = "float16",
                 max_bytes: int | None = None):
        self.directory = pathlib.Path(directory) if directory is not None else None
        self.dtype = np.dtype(dtype)
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, np.ndarray] = {}  # in use order, the least recent first

    def key(self, body: keras.Model, x: np.ndarray) -> str:
        """The store key of `body`'s features on `x`: its weights, output layer and the data."""
        cut = body.layers[-1].name  # a body's last layer is its cut
        return fingerprint_arrays([*body.get_weights(), np.asarray(x)], cut, str(self.dtype))

    def features(self, body: keras.Model, x: np.ndarray) -> np.ndarray:
        """`body.predict(x)` in inference mode, from the store when computed before.

        Returns a read-only array of `dtype` (memory-mapped from disk when the
        cache has a directory).
        """
        return self.features_of(body, [x])[0]

    def features_of(self, body: keras.Model, arrays: list[np.ndarray], *, verbose: int = 0) -> list[np.ndarray]:
        """`features(body, x)` for each of `arrays` (a trial's training and validation examples).

        Those not stored yet go through `body` once, batch by batch, each
        batch cast to `dtype` in the graph and written straight into its
        store (a `.npy` memory map on disk): no float32 copy of all the
        features is ever held. `verbose=1` shows a progress bar over the
        examples computed, as `predict` does.

        Example:
            >>> cache = FeatureCache()
            >>> body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
            >>> [f.shape for f in cache.features_of(body, [np.ones((4, 2)), np.zeros((1, 2))])], cache.misses
            ([(4, 3), (1, 3)], 2)
        """
        keys = [self.key(body, x) for x in arrays]
        missing = [(key, np.asarray(x)) for key, x in zip(keys, arrays) if not self._stored(key)]
        self.hits += len(arrays) - len(missing)
        self.misses += len(missing)
        if missing:
            infer = _Inference(body, self.dtype)
            if verbose:
                print(f"feature cache: computing the features of {body.layers[-1].name!r}", flush=True)
            progress = keras.utils.Progbar(sum(len(x) for _, x in missing), verbose=verbose, unit_name="example")
            for key, x in missing:
                self._store(key, infer, x, progress)
        loaded = [self._load(key) for key in keys]
        self._drop_beyond_budget(keep=set(keys))
        return loaded

    def _drop_beyond_budget(self, keep: set[str]) -> None:
        """Drop the least recently used in-memory features (not those in `keep`) while over `max_bytes`."""
        if self.max_bytes is None:
            return
        held = sum(values.nbytes for values in self._memory.values())
        for key in [key for key in self._memory if key not in keep]:
            if held <= self.max_bytes:
                return
            held -= self._memory.pop(key).nbytes

    def _stored(self, key: str) -> bool:
        return key in self._memory if self.directory is None else (self.directory / f"{key}.npy").is_file()

    def _store(self, key: str, infer: _Inference, x: np.ndarray, progress: keras.utils.Progbar) -> None:
        shape = (len(x), *infer.output_shape)
        if self.directory is None:
            values = np.empty(shape, self.dtype)
            infer.fill(values, x, progress)
            values.flags.writeable = False
            self._memory[key] = values
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.directory / f"{key}.npy") as tmp:  # written whole: concurrent workers never read half
            values = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=shape)
            infer.fill(values, x, progress)
            values.flush()
            del values

    def _load(self, key: str) -> np.ndarray:
        if self.directory is None:
            self._memory[key] = self._memory.pop(key)  # the most recently used last
            return self._memory[key]
        return np.load(self.directory / f"{key}.npy", mmap_mode="r")


class _Inference:
    """`body` called in inference mode batch by batch, its outputs cast to `dtype`.

    Called directly, as `keras_team.caching.cache_features` calls a frozen
    part: a `tf.function` (or `predict`) per body traced a graph for each cut
    and boundary, and TensorFlow warned of retracing once a search had made a
    few (it counts traces per function code, not per body).
    """

    def __init__(self, body: keras.Model, dtype: np.dtype):
        self.body = body
        self.input_dtype = body.inputs[0].dtype
        self.output_shape = tuple(body.outputs[0].shape[1:])
        self.dtype = dtype

    def fill(self, values: np.ndarray, x: np.ndarray, progress: keras.utils.Progbar) -> None:
        """Write the outputs on `x`, `PREDICT_BATCH` examples at a time, into `values`; `progress` counts them."""
        for start in range(0, len(x), PREDICT_BATCH):
            batch = np.asarray(x[start:start + PREDICT_BATCH], self.input_dtype)  # as a Keras Input casts it
            # A tensor, not an array: a functional model takes it for its one input (an array it warns of)
            outputs = keras.ops.convert_to_numpy(self.body(keras.ops.convert_to_tensor(batch), training=False))
            values[start:start + PREDICT_BATCH] = outputs.astype(self.dtype, copy=False)
            progress.add(len(batch))
