"""Predict with a finished run's team: each input's most probable classes, by name.

A run directory (what `keras-team run` writes) holds the team (`team.keras`)
and its report (`report.json`): the target task's class names and the
ensemble weights `Team.ensemble_weights` chose on validation data. `predict`
weighs the members as the report does (or uses one member), so its
probabilities are those the report's team ensemble scored.

Inputs are image files (bmp, gif, jpg, png), folders of them (searched
recursively) or `.npz` files holding an array `x` shaped like the team's
input. Images are read as the training folder was
(`keras.utils.image_dataset_from_directory`): decoded with the team input's
channels (grey <-> RGB) and resized to its height and width if they differ;
the team scales the pixels itself.

Example (`keras-team predict` calls `predict`):
    $ keras-team predict runs/pets new_photos/ --top 2
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from typing import IO

import keras
import numpy as np
import tensorflow as tf

from keras_team.data import IMAGE_EXTENSIONS, PROGRESS_ABOVE, decode_image
from keras_team.errors import KerasTeamError
from keras_team.files import load_model, read_json_mapping
from keras_team.team import Team

RUN_MODEL = "team.keras"
RUN_REPORT = "report.json"
IMAGE_CHANNELS = (1, 3, 4)  # what an image decodes to: grey, RGB, RGBA
BATCH_SIZE = 32  # inputs read and predicted at a time (model.predict's default batch)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One input's most probable classes, most probable first, with their probabilities."""

    input: str
    classes: tuple[str, ...]
    probabilities: tuple[float, ...]


def predict(
    run_dir: str | os.PathLike,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    member: str | None = None,
    top: int = 3,
    progress: bool = False,
) -> list[Prediction]:
    """The `top` classes of each input, by name, from the run's team ensemble or one member.

    Inputs are read and predicted `BATCH_SIZE` at a time (images decoded by
    a `tf.data` pipeline, `.npz` rows read as needed), so memory holds a few
    batches and the answers, never all the inputs.

    Args:
        run_dir: a finished run's directory (holding `team.keras` and `report.json`).
        inputs: an image file, a folder of images, a `.npz` file with array `x`, or a list of these.
        member: a member's name (e.g. "leader", "mlp"): its probabilities
            (a follower with one output per leader: their mean) instead of
            the ensemble's.
        top: how many classes per input (at most the number of classes).
        progress: show a Keras progress bar (on stdout) while predicting
            `PROGRESS_ABOVE` inputs or more.

    Returns:
        One `Prediction` per input, in the order given (a folder's images
        sorted by path, a `.npz` file's rows in order).

    Example:
        >>> np.savez(f"{tmp}/new.npz", x=x_test[:2])
        >>> first, second = predict(run_dir, f"{tmp}/new.npz", top=2)
        >>> first.input, first.classes, first.probabilities
        ('.../new.npz[0]', ('...', '...'), (0..., 0...))
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise KerasTeamError("top", top, "an int >= 1")
    sources = _sources(inputs)
    team, class_names, weights = read_run(pathlib.Path(run_dir))
    owned = team.member_outputs()
    if member is not None and member not in owned:
        raise KerasTeamError("member", member, f"a member of the team: {', '.join(owned)}")
    shape, dtype = tuple(team.inputs[0].shape[1:]), team.inputs[0].dtype
    pixels = _takes_pixels(team)
    total = _count(sources, shape)
    bar = keras.utils.Progbar(total, unit_name="input", interval=0.5) if progress and total >= PROGRESS_ABOVE else None
    predictions = []
    try:
        for names, x in _batches(sources, shape, BATCH_SIZE):
            _check_values(names, x, pixels)
            logits = team.predict_on_batch(x.astype(dtype, copy=False))  # one dtype: one traced function
            if member is None:
                probabilities = Team.ensemble(logits, weights)
            else:
                probabilities = Team.ensemble({name: logits[name] for name in owned[member]})
            predictions += _most_probable(names, keras.ops.convert_to_numpy(probabilities), class_names, top)
            if bar is not None:
                bar.update(len(predictions))
    except KerasTeamError:
        if bar is not None:
            bar.update(len(predictions), finalize=True)  # ends the bar's line before the error is printed
        raise
    return predictions


def _takes_pixels(model: keras.Model) -> bool:
    """Whether `model` scales 0-255 pixels itself: a `Rescaling` by 1/100 or less inside it (every zoo model's).

    Example:
        >>> from keras_team import zoo
        >>> _takes_pixels(zoo.seed_cnn((8, 8, 1), 2)), _takes_pixels(zoo.mlp(2))
        (True, False)
    """
    found, seen = [model], set()
    while found:
        layer = found.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.Rescaling) and np.all(np.abs(np.asarray(layer.scale)) <= 0.01):
            return True
        # sublayers: a model's, and those a wrapper holds (a Team's leader inside its `LeaderTaps`)
        found += [*getattr(layer, "layers", []), *(v for v in vars(layer).values() if isinstance(v, keras.layers.Layer))]
    return False


def _check_values(names: list[str], x: np.ndarray, pixels: bool) -> None:
    """Refuse inputs the team would answer without meaning: NaN/inf, or [0, 1] floats for a team of 0-255 `pixels`.

    Example:
        >>> _check_values(["a.npz[0]"], np.full((1, 2), 0.5, np.float32), pixels=True)
        Traceback (most recent call last):
        ...
        keras_team.errors.KerasTeamError: inputs='a.npz[0]: floats from 0.5 to 0.5' is not valid: expected pixel values from 0 to 255, as the team's training data held them (it scales them itself): multiply [0, 1] values by 255
    """
    if x.dtype.kind != "f" or not len(x):
        return
    rows = x.reshape(len(x), -1)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        raise KerasTeamError("inputs", f"{names[int(np.argmin(finite))]}: NaN/inf values", "finite pixel values")
    if pixels and 0 < rows.max() <= 1:
        raise KerasTeamError("inputs", f"{names[0]}: floats from {rows.min():g} to {rows.max():g}",
                             "pixel values from 0 to 255, as the team's training data held them (it scales them "
                             "itself): multiply [0, 1] values by 255")


def _most_probable(names: list[str], probabilities: np.ndarray, class_names: list[str], top: int) -> list[Prediction]:
    best = np.argsort(-probabilities, axis=-1, kind="stable")[:, :top]
    return [Prediction(name, tuple(class_names[i] for i in row), tuple(float(p[i]) for i in row))
            for name, row, p in zip(names, best, probabilities)]


def read_run(run_dir: pathlib.Path) -> tuple[Team, list[str], dict[str, float] | None]:
    """The run's team, its class names and its ensemble weights (None: equal, as a report without them).

    Example:
        >>> team, class_names, weights = read_run(pathlib.Path(run_dir))
        >>> class_names, weights
        (['5', '6', '7', '8', '9'], {'leader': 0.5, 'mlp': 0.5})
    """
    report = read_json_mapping(run_dir / RUN_REPORT, "ensemble")
    if not (run_dir / RUN_MODEL).is_file() or report is None or not isinstance(report.get("class_names"), list):
        raise KerasTeamError("run_dir", str(run_dir), f"a finished keras-team run directory holding {RUN_MODEL} "
                             f"and {RUN_REPORT}")
    try:
        team = load_model(run_dir / RUN_MODEL, compile=False)  # predicting needs no optimizer (none of its warnings)
    except KerasTeamError as error:
        raise KerasTeamError("run_dir", str(run_dir), f"a finished run's directory: {RUN_MODEL}: {error.allowed}") from error
    if not isinstance(team, Team):
        raise KerasTeamError("run_dir", str(run_dir), f"a run whose {RUN_MODEL} holds a keras_team Team, "
                             f"not a {type(team).__name__}")
    class_names = [str(name) for name in report["class_names"]]
    if len(class_names) != team.outputs[0].shape[-1]:
        raise KerasTeamError("run_dir", str(run_dir), f"a run whose {RUN_REPORT} names the team's "
                             f"{team.outputs[0].shape[-1]} classes (it names {len(class_names)})")
    return team, class_names, report["ensemble"].get("weights")


def _sources(inputs) -> list[pathlib.Path]:
    """Every input file: images, and `.npz` files; folders expanded to their images. Checked, not yet read."""
    given = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not given:
        raise KerasTeamError("inputs", [], "image files, folders of images or .npz files")
    found = []
    for path in map(pathlib.Path, given):
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not images:
                raise KerasTeamError("inputs", str(path), f"a folder holding images ({', '.join(IMAGE_EXTENSIONS)})")
            found += images
        elif not path.is_file():
            raise KerasTeamError("inputs", str(path), "an existing image file, folder or .npz file (no such file or folder)")
        elif path.suffix.lower() not in (*IMAGE_EXTENSIONS, ".npz"):
            raise KerasTeamError("inputs", str(path), f"an image ({', '.join(IMAGE_EXTENSIONS)}), a folder of "
                                 "images or a .npz file with an array x")
        else:
            found.append(path)
    return found


def _count(sources: list[pathlib.Path], shape: tuple) -> int:
    """How many examples `sources` hold; a `.npz` file's header or a team that takes no images refused now, before any prediction."""
    count = 0
    for path in sources:
        if path.suffix.lower() == ".npz":
            with _npz_x(path, shape) as (_, x_shape, _, _):
                count += x_shape[0]
        elif len(shape) != 3 or shape[-1] not in IMAGE_CHANNELS:
            raise KerasTeamError("inputs", str(path), f"a .npz file of arrays shaped {shape}: this team does not take images")
        else:
            count += 1
    return count


def _batches(sources: list[pathlib.Path], shape: tuple, size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """(a name per example, the examples shaped `shape`), at most `size` at a time, in order."""
    images: list[pathlib.Path] = []
    for path in [*sources, None]:
        if path is not None and path.suffix.lower() != ".npz":
            images.append(path)
            continue
        if images:  # a run of image files, decoded together
            yield from _image_batches(images, shape, size)
            images = []
        if path is not None:
            yield from _npz_batches(path, shape, size)


def _image_batches(paths: list[pathlib.Path], shape: tuple, size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """The images decoded as the training folder was read (`data.decode_image`) by a `tf.data` pipeline."""
    decoded = (tf.data.Dataset.from_tensor_slices([str(path) for path in paths])
               .map(lambda path: decode_image(path, shape), num_parallel_calls=tf.data.AUTOTUNE)
               .batch(size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
    for start in range(0, len(paths), size):
        try:
            x = next(decoded)
        except tf.errors.InvalidArgumentError:
            for path in paths[start:]:  # the pipeline names no file: find the first unreadable one
                _read_image(path, shape)
            raise
        yield [str(path) for path in paths[start:start + size]], x


def _read_image(path: pathlib.Path, shape: tuple) -> np.ndarray:
    """An image as uint8 pixels of the team's height, width and channels; an unreadable one is an error naming it."""
    try:
        return decode_image(str(path), shape).numpy()
    except tf.errors.InvalidArgumentError as error:
        said = error.message.splitlines()[0] if error.message else type(error).__name__
        raise KerasTeamError("inputs", str(path), f"a readable image ({said})") from None


@contextlib.contextmanager
def _npz_x(path: pathlib.Path, shape: tuple) -> Iterator[tuple[IO[bytes], tuple, np.dtype, bool]]:
    """(the open stream of array `x`'s data, its shape, dtype and Fortran order), checked against `shape`; no data read yet."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "x.npy" not in names:
                held = sorted(name.removesuffix(".npy") for name in names)
                raise KerasTeamError("inputs", str(path), f"a .npz file holding an array x (it holds "
                                     f"{', '.join(held) or 'nothing'})")
            with archive.open("x.npy") as stream:
                version = np.lib.format.read_magic(stream)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy format version {version}")
                x_shape, fortran_order, dtype = read_header(stream)
                if tuple(x_shape[1:]) != shape or dtype.kind not in "biuf":
                    raise KerasTeamError("inputs", f"{path}: x {dtype}{x_shape}",
                                         f"numbers shaped (examples, {', '.join(map(str, shape))}) as the team takes them")
                yield stream, x_shape, dtype, fortran_order
    except KerasTeamError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise KerasTeamError("inputs", str(path), f"a readable .npz file with an array x ({error})") from None


def _npz_batches(path: pathlib.Path, shape: tuple, size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """The rows of a `.npz` file's array `x`, read from the (possibly compressed) file `size` at a time."""
    with _npz_x(path, shape) as (stream, x_shape, dtype, fortran_order):
        # A Fortran-ordered array (np.save of a transposed one) has no contiguous rows: it is read whole.
        whole = _read_array(stream, dtype, x_shape[::-1]).T if fortran_order else None
        for start in range(0, x_shape[0], size):
            count = min(size, x_shape[0] - start)
            x = _read_array(stream, dtype, (count, *shape)) if whole is None else whole[start:start + count]
            yield [f"{path}[{i}]" for i in range(start, start + count)], x


def _read_array(stream: IO[bytes], dtype: np.dtype, shape: tuple) -> np.ndarray:
    """The next array of `dtype` and `shape` in `stream`."""
    size = dtype.itemsize * math.prod(shape)
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"x ends {size - len(data)} bytes early")
    return np.frombuffer(data, dtype).reshape(shape)
