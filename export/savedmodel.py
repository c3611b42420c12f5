"""SavedModels in TF Serving's layout: ``base_dir/<name>/<version>/``.

TF Serving loads every child of a model's base path whose name parses as a
number (``strtoll``: digits, an optional sign, spaces around), so a version is
built in a temporary sibling named ``.tmp-<random>-<version>`` (a leading dot
never parses) and renamed into place only once complete and synced
(`keras_team.files.atomic_dir`): a process killed at any moment leaves no
version directory TF Serving could load half-written. An existing version is
never replaced unless asked to.

Example:
    >>> model = keras_team.zoo.seed_cnn((8, 8, 1), 5, name="digits")
    >>> path = saved_model(model, tmp, name="digits", input_dtype="uint8")
    >>> path.name
    '1'
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from keras_team.backend import require_tensorflow
from keras_team.errors import KerasTeamError
from keras_team.export.metadata import METADATA_FILE, metadata
from keras_team.export.predict_requests import write_warmup
from keras_team.export.signatures import input_spec, write_archive
from keras_team.files import atomic_dir, write_text
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
    class_names: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
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
        class_names: one per class (default "0", "1", ...): the ``classify``
            and top-class outputs and ``assets/labels.txt``.
        weights: output name -> ensemble weight of ``serving_default`` and
            ``classify`` (`keras_team.Team.ensemble_weights`); default equal.

    Returns:
        The version directory, `base_dir/name/version`.

    Example:
        >>> saved_model(model, f"{tmp}/exports", name="digits", input_dtype="uint8")
        PosixPath('.../exports/digits/1')
    """
    require_tensorflow("SavedModel export")
    target = version_dir(base_dir, name, version, force=force)
    try:
        with atomic_dir(target, replace=force) as building:
            write_version(model, building, name=name, input_dtype=input_dtype, warmup=warmup,
                          class_names=class_names, weights=weights)
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        # another export took this version meanwhile
        raise KerasTeamError("version", int(target.name), f"a version nobody else is writing ({error})") from error
    return target


def version_dir(base_dir: str | os.PathLike, name: str, version: int | None = None, *, force: bool = False) -> pathlib.Path:
    """Where version `version` (default: the next free) of model `name` goes; refused if present unless `force`.

    Example:
        >>> version_dir("/nonexistent", "digits")
        PosixPath('/nonexistent/digits/1')
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
    return target


def write_version(model: keras.Model, directory: str | os.PathLike, *, name: str, input_dtype: str | None = None,
                  warmup: np.ndarray | None = None, class_names: Sequence[str] | None = None,
                  weights: Mapping[str, float] | None = None) -> None:
    """Write the SavedModel, its metadata record (`keras_team.export.metadata`) and warmup requests into `directory`.

    In place: `saved_model` makes it atomic.

    Example:
        >>> write_version(model, f"{tmp}/staging", name="digits", input_dtype="uint8")
        >>> (pathlib.Path(tmp) / "staging" / "saved_model.pb").is_file()
        True
    """
    spec = input_spec(model, input_dtype)
    write_archive(model, directory, spec, class_names=class_names, weights=weights)
    record = metadata(model, spec, class_names=class_names, weights=weights)
    write_text(pathlib.Path(directory) / METADATA_FILE, json.dumps(record, indent=2) + "\n")
    if warmup is not None:
        write_warmup(directory, warmup, name=name, dtype=spec.dtype.name)
