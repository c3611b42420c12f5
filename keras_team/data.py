"""Tasks: in-memory numpy splits served as `tf.data` pipelines.

A `Task` holds `train`, `validation` and `test` splits of `(x, y)` numpy
arrays. Images stay uint8 pixels 0..255 (models scale their own raw inputs);
labels are int32 `0..num_classes-1`, remapped from the chosen class subset in
the order given. Every source (`digits`, `tfds_task`, a user's `.npz` file
(`from_npz`) or folder of class subfolders of images (`from_folder`),
`from_arrays`, `from_dataset`) supports a class subset (`classes=`, by label
or class name) and stratified k-shot sampling of the train split (`shots=`),
all seeded. `load_task` picks the source a name means. Larger than memory:
`stream=True` (or "auto") makes a folder a `FileTask` (the same selection on
the file names, pixels decoded as served) and a TFDS dataset a
`StreamTask` (`tfds_stream`); every kind serves `dataset(split, training=)`,
`labels(split)` and `images(split)`.

Example:
    >>> source, target = digits_tasks(shots=5)
    >>> target.class_names, target.num_classes, target.input_shape
    (('5', '6', '7', '8', '9'), 5, (8, 8, 1))
    >>> x, y = next(iter(target.dataset("train", training=True)))
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import pathlib
import socket
import zipfile
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from keras_team.distribute import global_batch_size, shard_by_data
from keras_team.errors import KerasTeamError
from keras_team.extras import import_module

AUGMENTATIONS = ("flip", "crop", "shift")
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what keras.utils.image_dataset_from_directory reads
NPZ_MEMORY_FRACTION = 0.5  # a .npz file whose arrays declare more than this share of the memory is refused unread
STREAM_MEMORY_FRACTION = 0.1  # stream="auto" streams images whose decoded size exceeds this share of the memory
PROGRESS_ABOVE = 2000  # images: checking a folder this large shows a progress bar
SPLITS = ("train", "validation", "test")
CROP_PADDING = 4

Split = tuple[np.ndarray, np.ndarray]


class _Classes:
    """What every task kind shares: its training-only augmentation is checked, and it counts its classes."""

    augment: tuple[str, ...]
    class_names: tuple[str, ...]

    def __post_init__(self):
        _check_augment(self.augment)

    @property
    def num_classes(self) -> int:
        """How many classes the labels range over."""
        return len(self.class_names)


@dataclasses.dataclass(frozen=True, eq=False)
class Task(_Classes):
    """A classification task: numpy splits plus how to serve them.

    Args:
        name: a label for reports, e.g. `"digits"` or `"cifar100"`.
        splits: `"train"`, `"validation"`, `"test"` -> `(x, y)`; `y` int32 in
            `0..num_classes-1`.
        class_names: the name of each label, in label order.
        batch_size: examples per batch.
        augment: training-only augmentation, any of `"flip"`, `"crop"`, `"shift"` (`keras_team.data.AUGMENTATIONS`).
        seed: seeds shuffling and augmentation.

    Example:
        >>> x = np.zeros((4, 8, 8, 1), np.uint8)
        >>> y = np.array([0, 1, 0, 1], np.int32)
        >>> task = Task("toy", {"train": (x, y)}, ("a", "b"), batch_size=2)
        >>> [b[0].shape for b in task.dataset("train")]
        [TensorShape([2, 8, 8, 1]), TensorShape([2, 8, 8, 1])]
    """

    name: str
    splits: dict[str, Split]
    class_names: tuple[str, ...]
    batch_size: int = 32
    augment: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        train = self.splits.get("train")
        if train is None or len(train[1]) == 0:
            raise KerasTeamError("x", "no training examples", "a train split of at least one example per class")
        for split, (x, _) in self.splits.items():
            _check_finite(x, split)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. `(32, 32, 3)`."""
        return tuple(self.splits["train"][0].shape[1:])

    def labels(self, split: str) -> np.ndarray:
        """The int32 labels of one split, in the order `dataset(split)` serves them."""
        return self.splits[_check_split(split, self.splits)][1]

    def images(self, split: str) -> np.ndarray:
        """The examples of one split as one array (for a `FileTask`, decoded now)."""
        return self.splits[_check_split(split, self.splits)][0]

    def dataset(self, split: str, *, training: bool = False) -> tf.data.Dataset:
        """Batched, cached, prefetched `(x, y)` for one split.

        With `training=True` (train split only) the examples are shuffled
        (seeded, reshuffled every epoch) and augmented after the cache, so
        every epoch sees different images. Evaluation datasets are never
        shuffled nor augmented.

        Example:
            >>> task = keras_team.data.digits(classes=[0, 1], shots=5, batch_size=4)
            >>> x, y = next(iter(task.dataset("train", training=True)))
            >>> tuple(x.shape), tuple(y.shape)
            ((4, 8, 8, 1), (4,))
        """
        _check_split(split, self.splits, training)
        x, y = self.splits[split]
        ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
        return _serve(ds, self, len(y), training)


def _check_split(split: str, splits: dict, training: bool = False) -> str:
    if split not in splits:
        raise KerasTeamError("split", split, f"one of {sorted(splits)}")
    if training and split != "train":
        raise KerasTeamError("split", split, "'train' when training=True (evaluation data is never shuffled nor augmented)")
    return split


def _serve(ds: tf.data.Dataset, task, size: int, training: bool, decode=None) -> tf.data.Dataset:
    """Shuffled (training only, seeded, every epoch anew), decoded, augmented (training only), batched, prefetched."""
    if training:
        ds = ds.shuffle(size, seed=task.seed, reshuffle_each_iteration=True)
    if decode is not None:
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if training and task.augment:
        augment = _augmenter(task.augment, task.input_shape, task.seed)
        # Per example (RandomCrop draws one offset per batch) and
        # sequential, so the layers' seed state advances in order.
        ds = ds.map(lambda image, label: (augment(image), label))
    # batch_size is the global batch; several workers each take a share of it.
    batch_size = global_batch_size(task.batch_size, size)
    return shard_by_data(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def _augmenter(augment: Sequence[str], input_shape: tuple[int, ...], seed: int):
    """One example -> a randomly flipped and/or padded-and-cropped and/or shifted copy.

    `crop` pads by `CROP_PADDING` zeros and crops (torchvision's RandomCrop(size, padding=4)); `shift` moves the
    image by up to 1/8 of each side (at least one pixel), the borders mirrored: suits any image size.
    """
    height, width = input_shape[:2]
    layers = []
    if "flip" in augment:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if "crop" in augment:  # torchvision's RandomCrop(size, padding=4)
        layers += [
            keras.layers.ZeroPadding2D(CROP_PADDING),
            keras.layers.RandomCrop(height, width, seed=seed),
        ]
    if "shift" in augment:
        pad = [[0, 0], [max(1, height // 8)] * 2, [max(1, width // 8)] * 2, [0, 0]]
        layers += [lambda x, training: tf.pad(x, pad, mode="REFLECT"), keras.layers.RandomCrop(height, width, seed=seed + 1)]

    def apply(image: tf.Tensor) -> tf.Tensor:
        out = image[tf.newaxis]
        for layer in layers:
            out = layer(out, training=True)
        return tf.cast(out[0], image.dtype)  # flips and crops keep values

    return apply


@dataclasses.dataclass(frozen=True, eq=False)
class FileTask(_Classes):
    """A task whose splits are image files, decoded batch by batch as they are served (larger than memory).

    Class subsets, k-shot sampling and the validation split are chosen on
    the file list and its labels, exactly as a `Task` chooses them on pixels
    (same seed, same files); `dataset` reads and decodes the files in a
    `tf.data` pipeline (`tf.io.decode_image`, resized as Keras' own
    `image_dataset_from_directory` does), shuffling only the file names, so
    memory holds the names and a few batches, never the images. Built by
    `from_folder(..., stream=True)`; serves as a `Task` does.

    Args:
        name, class_names, batch_size, augment, seed: as for `Task`.
        files: `"train"`, `"validation"`, `"test"` -> `(paths, labels)`.
        input_shape: `(height, width, channels)` every image is decoded to.

    Example:
        >>> from PIL import Image
        >>> root = pathlib.Path(getfixture("tmp_path"))
        >>> for i in range(24):
        ...     (root / "ab"[i % 2]).mkdir(exist_ok=True)
        ...     Image.new("RGB", (6, 5), (10 * i, 0, 0)).save(root / "ab"[i % 2] / f"{i}.png")
        >>> task = from_folder(root, shots=4, stream=True)
        >>> task.input_shape, np.bincount(task.labels("train")).tolist()
        ((5, 6, 3), [4, 4])
        >>> [tuple(x.shape) for x, _ in task.dataset("train", training=True)]
        [(8, 5, 6, 3)]
    """

    name: str
    files: dict[str, Split]
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    batch_size: int = 32
    augment: tuple[str, ...] = ()
    seed: int = 0

    def labels(self, split: str) -> np.ndarray:
        """The int32 labels of one split, in the order `dataset(split)` serves them (no image is read)."""
        return self.files[_check_split(split, self.files)][1]

    def images(self, split: str) -> np.ndarray:
        """One split's images decoded into one uint8 array (in memory: for a small split, or a sample)."""
        paths, labels = self.files[_check_split(split, self.files)]
        decoded = tf.data.Dataset.from_tensor_slices((paths, labels)).map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)
        batches = [x for x, _ in decoded.batch(256).as_numpy_iterator()]
        return np.concatenate(batches) if batches else np.zeros((0, *self.input_shape), np.uint8)

    @functools.cached_property
    def splits(self) -> dict[str, Split]:
        """Every split decoded into memory, as a `Task` holds them: for code that needs arrays; prefer `dataset`."""
        return {split: (self.images(split), self.labels(split)) for split in self.files}

    def dataset(self, split: str, *, training: bool = False) -> tf.data.Dataset:
        """Batched, prefetched `(x, y)` of one split, decoded as served; shuffled and augmented with `training=True`.

        Example:
            >>> x, y = next(iter(task.dataset("validation")))
        """
        _check_split(split, self.files, training)
        paths, labels = self.files[split]
        return _serve(tf.data.Dataset.from_tensor_slices((paths, labels)), self, len(labels), training, self._decode)

    def _decode(self, path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return decode_image(path, self.input_shape), label


def decode_image(path: tf.Tensor | str, shape: tuple[int, int, int]) -> tf.Tensor:
    """The image file at `path` as uint8 pixels shaped `(height, width, channels)`, as a folder is read for training.

    Decoded with `channels` (grey <-> RGB) and resized bilinearly, as
    `keras.utils.image_dataset_from_directory` does; usable in a `tf.data` map.

    Example:
        >>> from PIL import Image
        >>> Image.new("L", (6, 5), 200).save(f"{tmp}/grey.png")
        >>> decode_image(f"{tmp}/grey.png", (4, 4, 3)).numpy()[0, 0].tolist()
        [200, 200, 200]
    """
    height, width, channels = shape
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    image = tf.image.resize(image, (height, width), method="bilinear")  # what image_dataset_from_directory does
    return tf.cast(tf.round(image), tf.uint8)


def examples(task: Task | FileTask | StreamTask, splits: Sequence[str],
             batch_size: int = 256) -> tuple[np.ndarray | tf.data.Dataset, np.ndarray]:
    """The inputs of `splits`, one split after another, for `model.predict`, and their int32 labels.

    A `Task`'s inputs are its arrays, joined; a streamed task's
    (`FileTask`, `StreamTask`) are a `tf.data.Dataset` of `batch_size`
    batches read as `task.dataset` serves them (a few batches decoded at a
    time, never a whole split), neither shuffled nor augmented: the batches
    `predict(arrays, batch_size=batch_size)` makes, so a model's outputs are
    those of the same task in memory.

    Example:
        >>> task = digits(classes=[0, 1], shots=5)
        >>> x, y = examples(task, ["train", "validation"])
        >>> x.shape[1:], len(y) == len(task.labels("train")) + len(task.labels("validation"))
        ((8, 8, 1), True)
    """
    labels = np.concatenate([task.labels(split) for split in splits]).astype(np.int32)
    if isinstance(task, Task):
        return np.concatenate([task.images(split) for split in splits]), labels
    inputs = functools.reduce(tf.data.Dataset.concatenate, [task.dataset(split).unbatch() for split in splits])
    inputs = inputs.map(lambda x, y: x).apply(tf.data.experimental.assert_cardinality(len(labels)))  # Keras knows the end
    return inputs.batch(batch_size).prefetch(tf.data.AUTOTUNE), labels


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    classes: Sequence[int | str] | None = None,
    shots: int | None = None,
    validation: float = 0.2,
    test: float = 0.3,
    seed: int = 0,
    batch_size: int = 32,
    augment: Sequence[str] = (),
    class_names: Sequence[str] | None = None,
    name: str = "arrays",
) -> Task:
    """A task from numpy arrays, split stratified into train/validation/test.

    The `test` fraction is held out first; from the rest, `shots` examples
    per class form train (the unused remainder only feeds validation, the
    rest is dropped) and a `validation` fraction of what is left is held
    out. Without `shots`, train is the rest minus validation.

    Args:
        x: examples, first axis the example index.
        y: integer labels, one per example.
        classes: the labels (or class names) to keep, remapped to
            `0..len(classes)-1` in this order; default all labels.
        shots: examples per class in train (k-shot); default all.
        validation, test: fractions in (0, 1).
        class_names: the name of each original label; default `str(label)`.

    Example:
        >>> x, y = np.zeros((60, 2)), np.arange(60) % 4
        >>> task = from_arrays(x, y, classes=[3, 1], shots=5)
        >>> task.class_names
        ('3', '1')
    """
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise KerasTeamError("y", f"{y.dtype}{y.shape}", "a 1-D array of integer labels")
    if len(x) != len(y):
        raise KerasTeamError("y", f"{len(y)} labels", f"{len(x)}, one per example in x")
    if class_names is None:
        class_names = [str(label) for label in range(int(y.max(initial=0)) + 1)]
    if len(y) == 0 or y.min() < 0 or y.max() >= len(class_names):
        raise KerasTeamError(
            "y", f"{len(y)} labels in {y.min(initial=0)}..{y.max(initial=0)}",
            f"at least one label, all in 0..{len(class_names) - 1} (one per class name)",
        )
    _check_fraction("test", test)
    x_train, y_train, x_test, y_test = _split_off(x, y, test, seed, "test")
    return _make_task(
        name, (x_train, y_train), (x_test, y_test), class_names=class_names,
        classes=classes, available=np.unique(y), shots=shots,
        validation=validation, seed=seed, batch_size=batch_size, augment=augment,
    )


def from_dataset(dataset: tf.data.Dataset, **kwargs: Any) -> Task:
    """A task from an unbatched `(x, y)` dataset, read whole into memory.

    The dataset is materialised to numpy arrays once, then split as by
    `from_arrays`, which takes the same keyword arguments.

    Example:
        >>> x, y = np.zeros((40, 2)), np.arange(40) % 2
        >>> task = from_dataset(tf.data.Dataset.from_tensor_slices((x, y)), classes=[0, 1], shots=5)
        >>> task.num_classes
        2
    """
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2) or spec[1].shape.rank != 0:
        raise KerasTeamError("dataset", spec, "an unbatched dataset of (x, scalar y)")
    examples = list(dataset.as_numpy_iterator())
    if not examples:
        raise KerasTeamError("dataset", "empty", "at least one (x, y) example")
    x, y = (np.stack(part) for part in zip(*examples))
    return from_arrays(x, y, **kwargs)


def digits(
    *,
    classes: Sequence[int | str] | None = None,
    shots: int | None = None,
    validation: float = 0.2,
    test: float = 0.3,
    seed: int = 0,
    batch_size: int = 32,
    augment: Sequence[str] = (),
) -> Task:
    """scikit-learn's bundled 8x8 handwritten digits (offline), as uint8 images.

    Pixels 0..16 become 0..255 (`round(v * 255 / 16)`), shape `(8, 8, 1)`;
    splits as in `from_arrays`.

    Example:
        >>> task = digits(classes=[5, 6, 7, 8, 9], shots=10)
        >>> task.class_names
        ('5', '6', '7', '8', '9')
    """
    x, y = load_digits(return_X_y=True)
    images = np.round(x * 255 / 16).astype(np.uint8).reshape(-1, 8, 8, 1)
    return from_arrays(
        images, y, classes=classes, shots=shots, validation=validation,
        test=test, seed=seed, batch_size=batch_size, augment=augment,
        class_names=[str(d) for d in range(10)], name="digits",
    )


def digits_tasks(
    *,
    shots: int = 10,
    seed: int = 0,
    batch_size: int = 32,
    validation: float = 0.2,
    test: float = 0.3,
) -> tuple[Task, Task]:
    """The offline default pair: source digits 0-4 (all), target 5-9 (`shots` each).

    Example:
        >>> source, target = digits_tasks(shots=10)
        >>> source.num_classes, len(target.splits["train"][1])
        (5, 50)
    """
    common = dict(validation=validation, test=test, seed=seed, batch_size=batch_size)
    return (
        digits(classes=range(5), **common),
        digits(classes=range(5, 10), shots=shots, **common),
    )


def tfds_task(
    name: str,
    *,
    classes: Sequence[int | str] | None = None,
    shots: int | None = None,
    validation: float = 0.1,
    seed: int = 0,
    batch_size: int = 32,
    augment: Sequence[str] = (),
    data_dir: str | None = None,
    download: bool = False,
    stream: bool | str = False,
) -> Task | StreamTask:
    """A TFDS image-classification dataset, read into memory (or streamed: `tfds_stream`).

    Uses the dataset's own `train`/`test` splits; validation is carved
    (stratified) from train after k-shot sampling, as in `from_arrays`.
    With `stream=True` (or "auto" and a train split of images larger than
    `memory_budget()`) it is `tfds_stream`'s `StreamTask` instead.

    Example:
        >>> target = tfds_task("cifar100", shots=3, augment=("flip", "crop"),
        ...                    data_dir="~/tensorflow_datasets", download=True)
        >>> target.num_classes, target.input_shape, int(np.bincount(target.splits["train"][1]).max())
        (100, (32, 32, 3), 3)
    """
    tfds = import_module("tensorflow_datasets")
    builder, names, _ = _tfds_builder(name, classes, shots, validation, data_dir, download)
    shape, splits = builder.info.features["image"].shape, builder.info.splits
    examples = splits["train"].num_examples if "train" in splits else 0  # 0: not prepared, size unknown
    if None not in shape and streams(stream, examples * math.prod(shape)):
        return tfds_stream(name, classes=classes, shots=shots, validation=validation, seed=seed,
                           batch_size=batch_size, augment=augment, data_dir=data_dir)
    try:
        train, test = builder.as_dataset(split=["train", "test"], as_supervised=True, batch_size=-1)
    except AssertionError as error:  # tfds: not prepared in data_dir, no download
        raise _not_prepared(name, data_dir) from error
    return _make_task(
        name, tfds.as_numpy(train), tfds.as_numpy(test), class_names=names,
        classes=classes, available=np.arange(len(names)), shots=shots,
        validation=validation, seed=seed, batch_size=batch_size, augment=augment,
    )


TFDS_HOST = "storage.googleapis.com"  # where TFDS downloads from first (its mirror, and most datasets' files)


def _tfds_builder(name: str, classes: Sequence[int | str] | None, shots: int | None, validation: float,
                  data_dir: str | None, download: bool) -> tuple[Any, list[str], list[int]]:
    """The TFDS builder of `name`, its class names and the classes kept: all checked before any download."""
    tfds = import_module("tensorflow_datasets")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise KerasTeamError("name", name, "a TFDS dataset name, e.g. 'cifar10'") from error
    names = builder.info.features["label"].names
    chosen = _check_selection(classes, shots, validation, np.arange(len(names)), names)
    if not download or builder.is_prepared():  # not prepared, no download: as_dataset says so (_not_prepared)
        return builder, names, chosen
    try:  # offline, TFDS's downloader retries every file for minutes: a name lookup tells in an instant
        socket.getaddrinfo(TFDS_HOST, 443)
    except OSError as error:
        raise KerasTeamError("download", True, f"a network to download {name!r} into {builder.data_dir}: it is not "
                             f"downloaded there and {TFDS_HOST} cannot be looked up ({error}); prepare it where "
                             f"there is a network (`tfds build {name} --data_dir DIR`) and set data_dir to DIR"
                             ) from None
    try:
        builder.download_and_prepare()
    except Exception as error:  # a network failure of any kind TFDS's downloader lets through
        raise KerasTeamError("download", True, f"{name!r} downloaded into {builder.data_dir}, which failed "
                             f"({type(error).__name__}: {str(error)[:200]}); prepare it where there is a network "
                             f"(`tfds build {name} --data_dir DIR`) and set data_dir to DIR") from error
    return builder, names, chosen


def _not_prepared(name: str, data_dir: str | None) -> KerasTeamError:
    return KerasTeamError("data_dir", data_dir, f"a folder holding {name!r} prepared, which it does not hold (not "
                          f"downloaded): run `tfds build {name} --data_dir DIR` with a network and set data_dir "
                          "to DIR, or set download to true")


def load_task(name: str, *, data_dir: str | None = None, download: bool = False, **kwargs: Any) -> Task:
    """The task a name means: `"digits"`, a `.npz` file, a folder of class subfolders, else a TFDS name.

    `data_dir` and `download` only concern TFDS: the digits are bundled and
    a user's files are read where they are. `stream` (True, False or
    "auto") streams a folder (`FileTask`) or a TFDS dataset (`StreamTask`)
    instead of reading it into memory; the digits and a `.npz` file are in
    memory anyway.

    Example:
        >>> load_task("digits", classes=[0, 1]).num_classes
        2
    """
    stream = kwargs.pop("stream", False)  # bundled digits and .npz arrays are in memory already
    if name == "digits":
        return digits(**kwargs)
    if name.endswith(".npz") or os.sep in name or pathlib.Path(name).exists():
        path = pathlib.Path(name).expanduser()
        if path.is_dir():
            return from_folder(path, stream=stream, **kwargs)
        if path.suffix == ".npz" and path.is_file():
            return from_npz(path, **kwargs)
        raise KerasTeamError("name", name, "an existing .npz file or folder of class subfolders "
                             f"({'no such file or folder' if not path.exists() else 'neither a folder nor a .npz file'})")
    kwargs.pop("test", None)  # TFDS datasets bring their own test split
    try:
        return tfds_task(name, data_dir=data_dir, download=download, stream=stream, **kwargs)
    except KerasTeamError as error:
        if error.field != "name":
            raise
        raise KerasTeamError("name", name, f"'digits', a .npz file, a folder of class subfolders, or {error.allowed}") from error


def from_npz(path: str | os.PathLike, *, test: float = 0.3, **kwargs: Any) -> Task:
    """A task from a `.npz` file of arrays `x` and `y` (optional: `x_test`, `y_test`, `class_names`).

    With `x_test`/`y_test` those are the test split; otherwise a stratified
    `test` fraction is held out. Labels are integers `0..n-1` (named by
    `class_names` when given), or strings: then their sorted distinct values
    are the class names. Other keyword arguments as in `from_arrays`.

    Example:
        >>> path = pathlib.Path(getfixture("tmp_path")) / "pets.npz"
        >>> np.savez(path, x=np.zeros((40, 4, 4, 3), np.uint8), y=np.array(["cat", "dog"] * 20))
        >>> from_npz(path, classes=["dog", "cat"], shots=5).class_names
        ('dog', 'cat')
    """
    path = pathlib.Path(path)
    try:
        declared, limit = _declared_bytes(path), NPZ_MEMORY_FRACTION * memory_budget() / STREAM_MEMORY_FRACTION
        if declared > limit:  # checked before a byte is inflated: a small archive may declare a huge array
            raise MemoryError(f"its arrays declare {declared / 2**30:.1f} GiB; at most {limit / 2**30:.1f} GiB, "
                              f"{NPZ_MEMORY_FRACTION:g} of this machine's memory, are read: a folder of images can stream")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, MemoryError, zipfile.BadZipFile, EOFError) as error:
        raise KerasTeamError("name", str(path), f"a readable .npz file of arrays x and y ({error})") from None
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing or ("x_test" in arrays) != ("y_test" in arrays):
        raise KerasTeamError("name", str(path), "a .npz file holding arrays x and y (and x_test with y_test, or "
                             f"neither); it holds {', '.join(sorted(arrays)) or 'nothing'}")
    given_names = arrays.get("class_names")
    labels = [arrays["y"], *([arrays["y_test"]] if "y_test" in arrays else [])]
    class_names, labels = _named_labels(labels, None if given_names is None else [str(n) for n in given_names], path)
    name = kwargs.pop("name", path.stem)
    try:
        if "x_test" not in arrays:
            return from_arrays(arrays["x"], labels[0], test=test, class_names=class_names, name=name, **kwargs)
        for key, x, y in (("x", arrays["x"], labels[0]), ("x_test", arrays["x_test"], labels[1])):
            _check_pairs(key, x, y, class_names)
        return _make_task(name, (arrays["x"], labels[0]), (arrays["x_test"], labels[1]), class_names=class_names,
                          available=np.unique(labels[0]), **_split_options(kwargs))
    except KerasTeamError as error:
        if error.field != "x":  # the examples themselves: the file is what to fix
            raise
        raise KerasTeamError("name", str(path), f"{error.allowed}: it holds {error.value}") from None


def from_folder(path: str | os.PathLike, *, test: float = 0.3, stream: bool | str = False,
                **kwargs: Any) -> Task | FileTask:
    """A task from a folder of class subfolders of images (jpg, png, bmp, gif), read into memory or streamed.

    The subfolder names are the class names (sorted). When the folder has
    `train/` and `test/` subfolders (each of class subfolders), they are the
    splits, and a `validation/` subfolder beside them, when present, is the
    validation split (instead of a fraction of train/: choices made on it
    then resemble test when train/ comes from elsewhere); otherwise a
    stratified `test` fraction is held out. Images are
    read by `keras.utils.image_dataset_from_directory` as uint8, at the most
    common image size and colour mode of the folder (others are resized and
    converted). With `stream=True` (or "auto" and images larger than
    `memory_budget()`) the result is a `FileTask`: the same splits, of file
    names, decoded as they are served. Other keyword arguments as in
    `from_arrays`.

    Example:
        >>> from PIL import Image
        >>> root = pathlib.Path(getfixture("tmp_path")) / "shapes"
        >>> for label in ("circle", "square"):
        ...     (root / label).mkdir(parents=True)
        ...     for i in range(12):
        ...         Image.new("RGB", (6, 5), (40 * i, 0, 0)).save(root / label / f"{i}.png")
        >>> task = from_folder(root, shots=4)
        >>> task.class_names, task.input_shape
        (('circle', 'square'), (5, 6, 3))
        >>> streamed = from_folder(root, shots=4, stream=True)
        >>> bool((streamed.images("test") == task.images("test")).all())
        True
    """
    root = pathlib.Path(path)
    name = kwargs.pop("name", root.name)
    two_splits = (root / "train").is_dir() and (root / "test").is_dir()
    if not two_splits and root.is_dir() and {p.name for p in root.iterdir() if p.is_dir()} == {"train"}:
        root = root / "train"  # train/ alone: its class folders, a test split held out of them
    files = _image_files(root / "train" if two_splits else root)
    class_names = sorted(files)
    test_files = _image_files(root / "test", class_names=class_names) if two_splits else {}
    valid_files = (_image_files(root / "validation", class_names=class_names)
                   if two_splits and (root / "validation").is_dir() else {})
    everything = [*files.values(), *test_files.values(), *valid_files.values()]
    size, mode = _common_format(everything)
    shape = (*size, 1 if mode == "grayscale" else 3)
    if not streams(stream, sum(map(len, everything)) * math.prod(shape)):
        if two_splits:
            train, test_split = (_read_images(root / split, class_names, size, mode) for split in ("train", "test"))
            valid = _read_images(root / "validation", class_names, size, mode) if valid_files else None
            return _make_task(name, train, test_split, class_names=class_names, available=np.unique(train[1]),
                              validation_split=valid, **_split_options(kwargs))
        x, y = _read_images(root, class_names, size, mode)
        return from_arrays(x, y, test=test, class_names=class_names, name=name, **kwargs)
    # The same selection on the file names (in the order Keras reads them), the pixels decoded as served.
    train = _listed(files, class_names)
    if two_splits:
        task = _make_task(name, train, _listed(test_files, class_names), class_names=class_names,
                          available=np.unique(train[1]),
                          validation_split=_listed(valid_files, class_names) if valid_files else None,
                          **_split_options(kwargs))
    else:
        task = from_arrays(*train, test=test, class_names=class_names, name=name, **kwargs)
    return FileTask(task.name, task.splits, task.class_names, shape, task.batch_size, task.augment, task.seed)


def _declared_bytes(path: pathlib.Path) -> int:
    """The bytes the arrays of a `.npz` file declare in their headers, read without inflating any data.

    Example:
        >>> path = pathlib.Path(getfixture("tmp_path")) / "a.npz"
        >>> np.savez_compressed(path, x=np.zeros((10, 4), np.float32), y=np.zeros(10, np.uint8))
        >>> _declared_bytes(path)
        170
    """
    total = 0
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            with archive.open(name) as stream:
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(np.lib.format.read_magic(stream))
                if read_header is None:
                    continue  # np.load says what it cannot read
                shape, _, dtype = read_header(stream)
                total += math.prod(shape) * dtype.itemsize
    return total


def memory_budget() -> int:
    """Bytes of decoded images a task may hold in memory before `stream="auto"` streams it.

    A tenth of the machine's physical memory: reading a folder into memory
    holds its images as float32 for a while (4 bytes a pixel value, beside
    the uint8 copy), and a run holds the source and the target task.

    Example:
        >>> memory_budget() > 0
        True
    """
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * STREAM_MEMORY_FRACTION)


def streams(stream: bool | str, decoded_bytes: int) -> bool:
    """Whether a source of `decoded_bytes` of uint8 pixels is streamed: `stream` True/False, or "auto" (over `memory_budget`).

    Example:
        >>> streams("auto", 20_000 * 32 * 32 * 3), streams(True, 0)
        (False, True)
    """
    if stream == "auto":
        return decoded_bytes > memory_budget()
    if not isinstance(stream, bool):
        raise KerasTeamError("stream", stream, "true, false or 'auto' (stream when the decoded images exceed "
                             f"{STREAM_MEMORY_FRACTION:g} of the machine's memory)")
    return stream


def _listed(files: dict[str, list[pathlib.Path]], class_names: Sequence[str]) -> Split:
    """(paths as strings, int32 labels) of class name -> files, in class order."""
    paths = [str(file) for label in class_names for file in files.get(label, ())]
    labels = [index for index, label in enumerate(class_names) for _ in files.get(label, ())]
    return np.array(paths), np.array(labels, np.int32)


def _split_options(kwargs: dict) -> dict:
    """`from_arrays`' keyword arguments as `_make_task` takes them."""
    options = dict(classes=None, shots=None, validation=0.2, seed=0, batch_size=32, augment=())
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(unknown)}")
    return {**options, **kwargs}


def _named_labels(labels: list[np.ndarray], class_names: list[str] | None,
                  path: pathlib.Path) -> tuple[list[str] | None, list[np.ndarray]]:
    """String labels -> int labels and their sorted names; int labels are kept."""
    if not any(y.dtype.kind in "USO" for y in labels):
        return class_names, labels
    if class_names is not None:
        lookup = {n: i for i, n in enumerate(class_names)}
        unknown = sorted({str(v) for y in labels for v in y} - set(lookup))
        if unknown:
            raise KerasTeamError("name", str(path), f"labels that are in its class_names; {unknown[:5]} are not")
    else:
        class_names = sorted({str(v) for y in labels for v in y})
        lookup = {n: i for i, n in enumerate(class_names)}
    return class_names, [np.array([lookup[str(v)] for v in y], np.int32) for y in labels]


def _check_pairs(field: str, x: np.ndarray, y: np.ndarray, class_names: Sequence[str] | None) -> None:
    if len(x) != len(y) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise KerasTeamError(field, f"{len(x)} examples, labels {y.dtype}{y.shape}", "one integer label per example")
    if class_names is not None and len(y) and (y.min() < 0 or y.max() >= len(class_names)):
        raise KerasTeamError(field, f"labels in {y.min()}..{y.max()}", f"labels in 0..{len(class_names) - 1} "
                             "(one per class name)")


def _image_files(folder: pathlib.Path, class_names: Sequence[str] | None = None) -> dict[str, list[pathlib.Path]]:
    """Class name -> its image files (sorted); every class folder must hold images."""
    if not folder.is_dir():
        raise KerasTeamError("name", str(folder), "a folder of class subfolders of images")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise KerasTeamError("name", str(folder), "a folder of class subfolders of images (it has no subfolders)")
    if class_names is not None and set(found) - set(class_names):
        raise KerasTeamError("name", str(folder), f"class folders that train/ also has ({sorted(class_names)}); "
                             f"{sorted(set(found) - set(class_names))} are not")
    if class_names is not None and set(class_names) - set(found):
        raise KerasTeamError("name", str(folder), f"a folder for every class of train/ ({sorted(class_names)}); "
                             f"{sorted(set(class_names) - set(found))} missing")
    files = {}
    for label in found:
        images = sorted(p for p in (folder / label).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise KerasTeamError("name", str(folder / label), f"a class folder holding images ({', '.join(IMAGE_EXTENSIONS)})")
        files[label] = images
    return files


def _common_format(groups) -> tuple[tuple[int, int], str]:
    """The most common (height, width) and colour mode ("rgb" or "grayscale") of the images; names a corrupt one."""
    from PIL import Image, UnidentifiedImageError

    files = [file for group in groups for file in group]
    bar = keras.utils.Progbar(len(files), unit_name="image") if len(files) >= PROGRESS_ABOVE else None
    sizes, modes = collections.Counter(), collections.Counter()
    for i, file in enumerate(files, 1):
        if bar is not None and (i % 500 == 0 or i == len(files)):
            bar.update(i)
        try:
            with Image.open(file) as image:
                image.verify()  # reads the whole file: a truncated or corrupt image fails here
                sizes[image.size[::-1]] += 1
                modes["grayscale" if image.mode in ("1", "L", "I;16", "I", "F") else "rgb"] += 1
        except Image.DecompressionBombError as error:  # its header declares it too large to decode: not read
            raise KerasTeamError("name", str(file), f"an image of at most {Image.MAX_IMAGE_PIXELS:,} pixels ({error})") from None
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            raise KerasTeamError("name", str(file), f"a readable image ({type(error).__name__}: {error})") from None
    return sizes.most_common(1)[0][0], modes.most_common(1)[0][0]


def _read_images(folder: pathlib.Path, class_names: Sequence[str], size: tuple[int, int], mode: str) -> Split:
    """(uint8 images, int32 labels) of `folder`'s class subfolders, read by Keras at `size` in `mode`."""
    dataset = keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="int", class_names=list(class_names), color_mode=mode,
        batch_size=None, image_size=size, shuffle=False, interpolation="bilinear", verbose=False)
    images, labels = zip(*dataset.as_numpy_iterator())
    return np.round(np.stack(images)).astype(np.uint8), np.asarray(labels, np.int32)


def _make_task(
    name: str,
    train: Split,
    test: Split,
    *,
    class_names: Sequence[str],
    classes: Sequence[int | str] | None,
    available: np.ndarray,
    shots: int | None,
    validation: float,
    seed: int,
    batch_size: int,
    augment: Sequence[str],
    validation_split: Split | None = None,
) -> Task:
    """The one splitter: class subset, k-shot train, stratified validation (or `validation_split`, its classes selected)."""
    classes = _check_selection(classes, shots, validation, available, class_names)
    _check_augment(augment)
    x, y = _select(*train, classes)
    if len(y) == 0:
        raise KerasTeamError("x", "no training examples", "a train split of at least one example per class")
    if shots is not None:
        _check_shots(y, shots, validation, [class_names[c] for c in classes])
        shot_idx = _sample_shots(y, shots, len(classes), seed)
        pool = np.setdiff1d(np.arange(len(y)), shot_idx)
        _, _, x_val, y_val = _split_off(x[pool], y[pool], validation, seed, "validation")
        x_train, y_train = x[shot_idx], y[shot_idx]
    else:
        x_train, y_train, x_val, y_val = _split_off(x, y, validation, seed, "validation")
    if validation_split is not None:
        x_train, y_train = (x[shot_idx], y[shot_idx]) if shots is not None else (x, y)
        x_val, y_val = _select(*validation_split, classes)
    return Task(
        name=name,
        splits={
            "train": (x_train, y_train),
            "validation": (x_val, y_val),
            "test": _select(*test, classes),
        },
        class_names=tuple(str(class_names[c]) for c in classes),
        batch_size=batch_size,
        augment=tuple(augment),
        seed=seed,
    )


def _select(x: np.ndarray, y: np.ndarray, classes: list[int]) -> Split:
    """Keeps the examples of `classes`, relabelled by position in `classes`."""
    lookup = {c: i for i, c in enumerate(classes)}
    keep = np.isin(y, classes)
    return x[keep], np.array([lookup[c] for c in y[keep]], dtype=np.int32)


def _check_finite(x: np.ndarray, split: str) -> None:
    """Refuse NaN or infinite inputs: one such example turns every loss into NaN."""
    if np.issubdtype(x.dtype, np.inexact):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            rows = int(np.count_nonzero((~np.isfinite(x.reshape(len(x), -1))).any(axis=1)))
            raise KerasTeamError("x", f"{bad} NaN or infinite values in the {split} split", "finite numbers in "
                                 f"every example ({rows} of {len(x)} examples hold some)")


def _validation_holds_every_class(counts: np.ndarray, validation: float) -> bool:
    """Whether a stratified `validation` split of `counts` examples per class holds each class."""
    labels = np.repeat(np.arange(len(counts)), counts)
    try:
        _, held = train_test_split(labels, test_size=validation, stratify=labels, random_state=0)
    except ValueError:
        return False
    return len(np.unique(held)) == len(counts)


def _check_selection(classes: Sequence[int | str] | None, shots: int | None, validation: float,
                     available: np.ndarray, class_names: Sequence[str]) -> list[int]:
    """The class subset, k-shot count and validation fraction every source takes; the classes kept."""
    _check_fraction("validation", validation)
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1):
        raise KerasTeamError("shots", shots, "an integer >= 1, or None for all examples")
    return _check_classes(classes, available, class_names)


def _check_shots(y: np.ndarray, shots: int, validation: float, names: Sequence[str]) -> None:
    """`shots` per class must leave every class examples for validation; else name the limit."""
    counts = np.bincount(y, minlength=len(names))
    if shots <= counts.min() and _validation_holds_every_class(counts - shots, validation):
        return
    smallest = int(np.argmin(counts))
    limit = next((k for k in range(int(counts.min()), 0, -1)
                  if _validation_holds_every_class(counts - k, validation)), 0)
    raise KerasTeamError(
        "shots", shots,
        f"at most {limit}: class {names[smallest]!r} has the fewest training examples ({counts[smallest]}), "
        f"and the rest must leave validation ({validation:g} of it) an example of every class",
    )


def _sample_shots(y: np.ndarray, shots: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices of `shots` random examples of each (remapped) class, sorted."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == label), shots, replace=False) for label in range(num_classes)]
    return np.sort(np.concatenate(chosen))


def _split_off(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, field: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified `(x_keep, y_keep, x_held, y_held)` with `fraction` held out."""
    try:
        keep, held = train_test_split(
            np.arange(len(y)), test_size=fraction, stratify=y, random_state=seed
        )
    except ValueError as error:
        raise KerasTeamError(
            field, fraction,
            f"a fraction leaving every class examples on both sides ({error})",
        ) from error
    return x[keep], y[keep], x[held], y[held]


def _check_fraction(field: str, value: float) -> None:
    if not 0 < value < 1:
        raise KerasTeamError(field, value, "a fraction strictly between 0 and 1")


def _check_augment(augment: Sequence[str]) -> None:
    if isinstance(augment, str):
        raise KerasTeamError("augment", augment, f"a list of names from {AUGMENTATIONS}")
    unknown = [a for a in augment if a not in AUGMENTATIONS]
    if unknown:
        raise KerasTeamError("augment", unknown[0], f"one of {AUGMENTATIONS}")


def _check_classes(classes: Sequence[int | str] | None, available: np.ndarray,
                   class_names: Sequence[str]) -> list[int]:
    """The labels to keep, as plain ints (a class given by name becomes its label); all available when `None`.

    A class is found by its name first: with folders named ``1, 2, 5, 7``,
    ``classes: [1, 2]`` keeps the folders 1 and 2, not the second and third.

    Example:
        >>> _check_classes([1, 2], np.arange(4), ["1", "2", "5", "7"]), _check_classes([3], np.arange(4), "abcd")
        ([0, 1], [3])
    """
    available = [int(c) for c in available]
    if classes is None:
        return available
    lookup = {str(name): label for label, name in enumerate(class_names)}
    chosen = [lookup[str(c)] if str(c) in lookup else c if isinstance(c, str) else int(c) for c in classes]
    unknown = [c for c in chosen if c not in available]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        offered = ", ".join(f"{label} ({class_names[label]})" if str(class_names[label]) != str(label) else str(label)
                            for label in available)
        raise KerasTeamError("classes", list(classes), f"distinct labels or class names from the available classes: {offered}")
    return chosen


# ---------------------------------------------------------------------------
# Streaming: TFDS datasets larger than memory.

STREAM_SHUFFLE_BUFFER = 1024  # examples held for shuffling a streamed split (bounds its memory)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamTask(_Classes):
    """A task whose splits stream from TFDS: nothing is held in memory but a shuffle buffer.

    Built by `tfds_stream`; `dataset(split, training=)` serves batches like
    `Task.dataset`: `batch_size` is the global batch, shared by the replicas
    of a strategy by the same rule (`distribute.global_batch_size`), which
    knows a split's length only from `sizes` (the k-shot train split).

    Example:
        >>> task = tfds_stream("cifar100", shots=5, data_dir="~/tensorflow_datasets")
        >>> for x, y in task.dataset("train", training=True):
        ...     pass  # a training step
        >>> x.shape[1:]
        TensorShape([32, 32, 3])
    """

    name: str
    sources: dict[str, Any]  # split -> a function returning the unbatched (x, y) dataset
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    batch_size: int = 32
    seed: int = 0
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # split -> examples, where known
    augment: tuple[str, ...] = ()
    _labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)  # filled by `labels`

    def labels(self, split: str) -> np.ndarray:
        """The int32 labels of one split in the order `dataset(split)` serves them (one pass, then remembered)."""
        if _check_split(split, self.sources) not in self._labels:
            self._labels[split] = np.fromiter(self.sources[split]().map(lambda x, y: y).as_numpy_iterator(), np.int32)
        return self._labels[split]

    @functools.cached_property
    def splits(self) -> dict[str, Split]:
        """Every split read into memory, as a `Task` holds them: for code that needs arrays; prefer `dataset`."""
        return {split: (self.images(split), self.labels(split)) for split in self.sources}

    def images(self, split: str) -> np.ndarray:
        """One split's examples in one array (in memory: for a small split, or a sample)."""
        batches = [x for x, _ in self.sources[_check_split(split, self.sources)]().batch(256).as_numpy_iterator()]
        return np.concatenate(batches) if batches else np.zeros((0, *self.input_shape), np.uint8)

    def dataset(self, split: str, *, training: bool = False) -> tf.data.Dataset:
        """Batched, prefetched `(x, y)` of one split, streamed; shuffled (seeded) with `training=True`.

        Example:
            >>> x, y = next(iter(task.dataset("validation")))
        """
        ds = self.sources[_check_split(split, self.sources, training)]()
        if training:
            ds = ds.shuffle(STREAM_SHUFFLE_BUFFER, seed=self.seed, reshuffle_each_iteration=True)
            if self.augment:
                augment = _augmenter(self.augment, self.input_shape, self.seed)
                ds = ds.map(lambda image, label: (augment(image), label))
        batch_size = global_batch_size(self.batch_size, self.sizes.get(split))
        return shard_by_data(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def tfds_stream(
    name: str,
    *,
    classes: Sequence[int | str] | None = None,
    shots: int | None = None,
    validation: float = 0.1,
    seed: int = 0,
    batch_size: int = 32,
    augment: Sequence[str] = (),
    data_dir: str | None = None,
    download: bool = False,
) -> StreamTask:
    """A TFDS image-classification dataset as a `StreamTask`: never read whole into memory.

    The class subset, k-shot sampling and the validation split are done on
    the `tf.data` pipeline in one seeded pass over TFDS's `train` split: its
    files are read in a seeded order, the examples of other classes are
    dropped, the first `shots` examples met of each class form train (the
    pass stops once every class has them), and each remaining example goes
    to validation with probability `validation` (a stateless draw from
    `seed` and its position), so the same seed gives the same splits. Without
    `shots`, train is every example not drawn for validation. `test` is
    TFDS's `test` split, class subset only.

    Example:
        >>> task = tfds_stream("cifar100", classes=[3, 1], shots=5, data_dir="~/tfds")
        >>> task.class_names
        ('3', '1')
    """
    tfds = import_module("tensorflow_datasets")
    builder, names, chosen = _tfds_builder(name, classes, shots, validation, data_dir, download)
    lookup = np.full(len(names), -1, np.int32)
    lookup[chosen] = np.arange(len(chosen), dtype=np.int32)
    lookup = tf.constant(lookup)

    def read(split: str) -> tf.data.Dataset:
        try:
            ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=True,
                                    read_config=tfds.ReadConfig(shuffle_seed=seed))
        except AssertionError as error:  # tfds: not prepared in data_dir
            raise _not_prepared(name, data_dir) from error
        ds = ds.map(lambda x, y: (x, tf.gather(lookup, tf.cast(y, tf.int32))))
        return ds.filter(lambda x, y: y >= 0)

    def pool() -> tf.data.Dataset:
        """(x, y, in_train, in_validation) in one seeded pass."""
        k = len(chosen)

        def assign(counts, element):
            index, (x, y) = element
            draw = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64), index]))
            if shots is None:
                return counts, (x, y, draw >= validation, draw < validation, tf.constant(True))
            unfinished = tf.reduce_any(counts < shots)  # before this example: it may complete the last class
            in_train = counts[y] < shots
            counts = tf.tensor_scatter_nd_add(counts, [[y]], [tf.cast(in_train, tf.int64)])
            return counts, (x, y, in_train, tf.logical_and(~in_train, draw < validation), unfinished)

        # Files in seeded order, then a seeded, bounded shuffle: the same order on every pass.
        ordered = read("train").shuffle(STREAM_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=False)
        return ordered.enumerate().scan(tf.zeros([k], tf.int64), assign)

    def train() -> tf.data.Dataset:
        ds = pool()
        if shots is not None:  # stop once every class has its shots
            ds = ds.take_while(_unfinished)
        return ds.filter(_in_train).map(_example)

    def valid() -> tf.data.Dataset:
        return pool().filter(_in_validation).map(_example)

    shape = tuple(builder.info.features["image"].shape)
    return StreamTask(name, {"train": train, "validation": valid, "test": lambda: read("test")},
                      tuple(str(names[c]) for c in chosen), shape, batch_size, seed,
                      sizes={} if shots is None else {"train": shots * len(chosen)}, augment=tuple(augment))


# Fields of the pooled stream: (x, y, in_train, in_validation, unfinished).
def _example(x, y, in_train, in_validation, unfinished):
    return x, y


def _in_train(x, y, in_train, in_validation, unfinished):
    return in_train


def _in_validation(x, y, in_train, in_validation, unfinished):
    return in_validation


def _unfinished(x, y, in_train, in_validation, unfinished):
    return unfinished
