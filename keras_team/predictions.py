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

import dataclasses
import os
import pathlib
import zipfile
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_team.data import IMAGE_EXTENSIONS
from keras_team.errors import KerasTeamError
from keras_team.files import load_model, read_json_mapping
from keras_team.team import Team

RUN_MODEL = "team.keras"
RUN_REPORT = "report.json"
IMAGE_CHANNELS = (1, 3, 4)  # what an image decodes to: grey, RGB, RGBA


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
) -> list[Prediction]:
    """The `top` classes of each input, by name, from the run's team ensemble or one member.

    Args:
        run_dir: a finished run's directory (holding `team.keras` and `report.json`).
        inputs: an image file, a folder of images, a `.npz` file with array `x`, or a list of these.
        member: a member's name (e.g. "leader", "mlp"): its probabilities
            (a follower with one output per leader: their mean) instead of
            the ensemble's.
        top: how many classes per input (at most the number of classes).

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
    names, x = _read_inputs(sources, tuple(team.inputs[0].shape[1:]))
    logits = team.predict(x, verbose=0)
    if member is None:
        probabilities = Team.ensemble(logits, weights)
    else:
        probabilities = Team.ensemble({name: logits[name] for name in owned[member]})
    probabilities = keras.ops.convert_to_numpy(probabilities)
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
    team = load_model(run_dir / RUN_MODEL, "run_dir")
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


def _read_inputs(sources: list[pathlib.Path], shape: tuple) -> tuple[list[str], np.ndarray]:
    """(a name per example, the examples), each shaped `shape`."""
    names, arrays = [], []
    for path in sources:
        if path.suffix.lower() == ".npz":
            x = _read_npz(path, shape)
            names += [f"{path}[{i}]" for i in range(len(x))]
            arrays.append(x)
        else:
            names.append(str(path))
            arrays.append(_read_image(path, shape)[np.newaxis])
    dtypes = {array.dtype for array in arrays}
    return names, np.concatenate(arrays) if len(dtypes) == 1 else np.concatenate([a.astype("float32") for a in arrays])


def _read_npz(path: pathlib.Path, shape: tuple) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise KerasTeamError("inputs", str(path), f"a .npz file holding an array x (it holds "
                                     f"{', '.join(sorted(archive.files)) or 'nothing'})")
            x = archive["x"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise KerasTeamError("inputs", str(path), f"a readable .npz file with an array x ({error})") from None
    if tuple(x.shape[1:]) != shape or x.dtype.kind not in "biuf":
        raise KerasTeamError("inputs", f"{path}: x {x.dtype}{x.shape}",
                             f"numbers shaped (examples, {', '.join(map(str, shape))}) as the team takes them")
    return x


def _read_image(path: pathlib.Path, shape: tuple) -> np.ndarray:
    """An image as uint8 pixels of the team's height, width and channels (as the training folder was read)."""
    if len(shape) != 3 or shape[-1] not in IMAGE_CHANNELS:
        raise KerasTeamError("inputs", str(path), f"a .npz file of arrays shaped {shape}: this team does not take images")
    try:
        image = tf.io.decode_image(tf.io.read_file(str(path)), channels=shape[-1], expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        said = error.message.splitlines()[0] if error.message else type(error).__name__
        raise KerasTeamError("inputs", str(path), f"a readable image ({said})") from None
    if tuple(image.shape[:2]) != shape[:2]:
        image = tf.image.resize(image, shape[:2], method="bilinear")
    return np.round(image.numpy()).astype(np.uint8)
