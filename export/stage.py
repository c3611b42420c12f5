"""Export one model in every requested format and verify each: what `keras-team export` runs.

Layout under `out_dir`:

- ``serving/<name>/<version>/``: the SavedModel (TF Serving layout, with warmup
  requests) and ``serving/models.config``;
- ``litert/<name>.<format>.tflite``: one LiteRT file per TFLite format;
- ``export_report.json``: the parity report of `keras_team.export.verify`.

Example:
    >>> report = export_model(team, "runs/digits/export", name="digits",
    ...                       formats=["saved_model", "tflite-int8"],
    ...                       train_examples=x_train, test_examples=x_test,
    ...                       test_labels=y_test)                            # doctest: +SKIP
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from keras_team.errors import KerasTeamError
from keras_team.export.litert import tflite_files
from keras_team.export.parity import verify
from keras_team.export.savedmodel import saved_model
from keras_team.export.serving import serving_config

# Format -> (quantization, int8 I/O) of its LiteRT file; None for the SavedModel.
FORMATS = {
    "saved_model": None,
    "tflite": ("float32", "float"),
    "tflite-float32": ("float32", "float"),
    "tflite-dynamic": ("dynamic", "float"),
    "tflite-float16": ("float16", "float"),
    "tflite-int8": ("int8", "int8"),
    "tflite-int8-float-io": ("int8", "float"),
}
REPORT = "export_report.json"
WARMUP_EXAMPLES = 10


def check_formats(formats: Sequence[str]) -> list[str]:
    """The formats, each once, in order; "tflite" means "tflite-float32".

    Example:
        >>> check_formats(["saved_model", "tflite", "tflite-float32"])
        ['saved_model', 'tflite-float32']
    """
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise KerasTeamError("formats", ",".join(unknown) or "", f"a comma-separated list of: {', '.join(FORMATS)}")
    return list(dict.fromkeys("tflite-float32" if fmt == "tflite" else fmt for fmt in formats))


def export_model(
    model: keras.Model,
    out_dir: str | os.PathLike,
    *,
    name: str,
    formats: Sequence[str],
    train_examples: np.ndarray,
    test_examples: np.ndarray,
    test_labels: np.ndarray | None = None,
    input_dtype: str | None = None,
    version: int | None = None,
    force: bool = False,
    tolerances: Mapping[str, Mapping[str, float]] | None = None,
    seed: int = 0,
) -> dict:
    """Write every format of `model` under `out_dir`, then verify each on the test examples.

    Args:
        model: the Keras model or Team.
        out_dir: the export directory (layout in the module docstring).
        name: the model's name for TF Serving and the LiteRT file names.
        formats: keys of `FORMATS`.
        train_examples: raw, unaugmented training examples: int8 calibration
            and warmup requests come from them.
        test_examples, test_labels: held-out examples the artefacts are verified on.
        input_dtype: dtype of the raw examples; default that of `train_examples`.
        version, force: the SavedModel version (default the next free) and
            whether to replace it.
        tolerances: per format overrides of `keras_team.export.TOLERANCES`.
        seed: seeds the int8 calibration sample.

    Returns:
        The parity report (also in `out_dir/export_report.json`), with the
        artefact paths; raises `KerasTeamError` when an artefact misses its tolerance.
    """
    formats = check_formats(formats)
    out_dir = pathlib.Path(out_dir)
    input_dtype = input_dtype or np.asarray(train_examples).dtype.name
    artefacts, litert_files = {}, {}
    for fmt in formats:
        if FORMATS[fmt] is None:
            artefacts[fmt] = saved_model(model, out_dir / "serving", name=name, version=version, force=force,
                                         input_dtype=input_dtype, warmup=np.asarray(train_examples[:WARMUP_EXAMPLES]))
            serving_config(out_dir / "serving", names=[name])
        else:
            artefacts[fmt] = out_dir / "litert" / f"{name}.{fmt.removeprefix('tflite-')}.tflite"
            litert_files[artefacts[fmt]] = FORMATS[fmt]
    if litert_files:
        tflite_files(model, litert_files, representative_data=train_examples, input_dtype=input_dtype, seed=seed)
    return verify(model, artefacts, test_examples, test_labels, tolerances=tolerances, report_path=out_dir / REPORT)
