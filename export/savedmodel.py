"""SavedModels in TF Serving's layout: ``base_dir/<name>/<version>/``.

TF Serving loads any numbered directory that appears under a model's base
path, so a version is built in a hidden temporary sibling (``.<version>.*``,
which TF Serving ignores) and renamed into place only once complete; an
existing version is never replaced unless asked to.

Example:
    >>> model = keras_team.zoo.seed_cnn((8, 8, 1), 5, name="digits")
    >>> path = saved_model(model, tmp, name="digits", input_dtype="uint8")
    >>> path.name
    '1'
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import keras
import numpy as np

from keras_team.errors import KerasTeamError
from keras_team.export.predict_requests import write_warmup
from keras_team.export.signatures import input_spec, write_archive
from keras_team.followers import check_name


def versions(model_dir: str | os.PathLike) -> list[int]:
    """The version numbers present under a model's base path, ascending.

    Example:
        >>> versions("/nonexistent")
        []
    """
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def saved_model(
    model: keras.Model,
    base_dir: str | os.PathLike,
    *,
    name: str,
    version: int | None = None,
    force: bool = False,
    input_dtype: str | None = None,
    warmup: np.ndarray | None = None,
) -> pathlib.Path:
    """Export `model` (a Team or one model) as version `version` of TF Serving model `name`.

    Signatures and their input/output names are described in
    `keras_team.export.signatures`.

    Args:
        model: the Keras model or Team to export.
        base_dir: TF Serving's model root (the directory holding one folder per model).
        name: the model's name for TF Serving (its folder under `base_dir`).
        version: an int >= 1; default the next free one (1 for a new model).
        force: replace `version` if it exists already.
        input_dtype: dtype of the raw examples the server receives (e.g.
            "uint8" for pixels); default the model input's dtype.
        warmup: sample inputs; written as TF Serving warmup requests in
            `assets.extra/` (see `keras_team.export.predict_requests.write_warmup`).

    Returns:
        The version directory, `base_dir/name/version`.

    Example:
        >>> saved_model(model, f"{tmp}/exports", name="digits", input_dtype="uint8")
        PosixPath('.../exports/digits/1')
    """
    check_name("name", name)
    model_dir = pathlib.Path(base_dir) / name
    present = versions(model_dir)
    if version is None:
        version = (present[-1] + 1) if present else 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise KerasTeamError("version", version, "an int >= 1, or None for the next free version")
    target = model_dir / str(version)
    if target.exists() and not force:
        raise KerasTeamError("version", version, f"a version not in {model_dir} yet (present: {present}), or force=True")
    spec = input_spec(model, input_dtype)
    model_dir.mkdir(parents=True, exist_ok=True)
    building = pathlib.Path(tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir))
    try:
        write_archive(model, building, spec)
        if warmup is not None:
            write_warmup(building, warmup, name=name, dtype=spec.dtype.name)
        _move_into_place(building, target, replace=force)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _move_into_place(building: pathlib.Path, target: pathlib.Path, *, replace: bool) -> None:
    """Rename `building` to `target`; with `replace`, an old `target` is swapped out first."""
    old = None
    if replace and target.exists():
        old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / "version")
    try:
        os.rename(building, target)
    except OSError as error:  # another export took this version meanwhile
        if old is not None:
            os.replace(old / "version", target)
        raise KerasTeamError("version", int(target.name), f"a version nobody else is writing ({error})") from error
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
