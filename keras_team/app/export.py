"""`keras-team export`: a run's team, or any `.keras` model, in every requested format, each verified.

The data comes from a keras-team config: the run's own ``config.yaml``, or
``--config`` (default: the built-in config): its target task's unaugmented
training split calibrates int8 and feeds the warmup requests, and its test
split is what every artefact is verified on.

Layout under `out_dir`:

- ``serving/<name>/<version>/``: the SavedModel (TF Serving layout, with warmup
  requests) and ``serving/models.config``;
- ``litert/<name>.<format>.tflite``: one LiteRT file per TFLite format;
- ``export_report.json``: the parity report of `keras_team.export.verify`.

Example:
    $ keras-team export runs/digits --formats saved_model,tflite,tflite-int8
    $ keras-team export model.keras --config my.yaml --name digits --version 3
"""

from __future__ import annotations

import argparse
import os
import pathlib
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from keras_team.app.config import load_config
from keras_team.app.recipe import load_tasks
from keras_team.errors import KerasTeamError
from keras_team.export.formats import FORMATS, check_formats
from keras_team.export.litert import tflite_files
from keras_team.export.parity import verify
from keras_team.export.savedmodel import saved_model
from keras_team.export.serving import serving_config
from keras_team.files import load_model

REPORT = "export_report.json"
WARMUP_EXAMPLES = 10
RUN_MODEL = "team.keras"
RUN_CONFIG = "config.yaml"


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
    expected = tuple(model.inputs[0].shape[1:]) if len(model.inputs or ()) == 1 else None
    for field, examples in (("train_examples", train_examples), ("test_examples", test_examples)):
        if expected is not None and tuple(np.shape(examples)[1:]) != expected:
            raise KerasTeamError(field, f"examples shaped {tuple(np.shape(examples)[1:])}",
                                 f"examples shaped like the model input {expected} (data from another config?)")
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


def summary(report: dict) -> dict:
    """Per artefact: path, size, worst logit difference and top-1 agreement (for a run's state).

    Example:
        >>> summary({"artefacts": {}})
        {}
    """
    figures = {}
    for label, entry in report["artefacts"].items():
        outputs = [f for signature in entry["signatures"].values() for f in signature.values()]
        figures[label] = {
            "path": entry["path"],
            "size_bytes": entry["size_bytes"],
            "max_abs_diff": max((f["max_abs_diff"] for f in outputs), default=0.0),
            "top1_agreement": min((f["top1_agreement"] for f in outputs), default=1.0),
        }
    return figures



def _sources(path: pathlib.Path, config: str | None) -> tuple[pathlib.Path, str | None, pathlib.Path, str]:
    """(model file, config file, output dir, default name) for a run directory or a .keras file."""
    if path.is_dir():
        model_file = path / RUN_MODEL
        if not model_file.is_file():
            raise KerasTeamError("path", str(path), f"a run directory holding {RUN_MODEL}, or a .keras file")
        return model_file, config or str(path / RUN_CONFIG), path / "export", "team"
    if path.suffix != ".keras" or not path.is_file():
        raise KerasTeamError("path", str(path), "a run directory or an existing .keras file")
    sibling = path.parent / RUN_CONFIG
    return path, config or (str(sibling) if sibling.is_file() else None), path.parent / "export", path.stem


def handle(args: argparse.Namespace) -> None:
    """Run `keras-team export` (errors are `KerasTeamError`s, printed by the caller)."""
    formats = check_formats([fmt.strip() for fmt in args.formats.split(",") if fmt.strip()])
    model_file, config_file, out_dir, name = _sources(pathlib.Path(args.path), args.config)
    config = load_config(config_file)
    model = load_model(model_file, "path")
    _, target = load_tasks(config)
    x_test, y_test = target.splits["test"]
    out_dir = pathlib.Path(args.output_dir or out_dir)
    report = export_model(model, out_dir, name=args.name or name, formats=formats,
                          train_examples=target.splits["train"][0], test_examples=x_test, test_labels=y_test,
                          version=args.version, force=args.force, seed=config.seed)
    for label, entry in summary(report).items():
        print(f"{label:22s} {entry['size_bytes'] / 1024:9.1f} KiB  max|diff| {entry['max_abs_diff']:.2e}  "
              f"top-1 agreement {entry['top1_agreement']:.4f}  {entry['path']}")
    print(f"\nverified on {report['examples']} test examples; report in {out_dir / REPORT}")
