"""`keras-team export`: a run's team, or any `.keras` model, in every requested format, each verified.

The data comes from a keras-team config: the run's own ``config.yaml``, or
``--config`` (default: the built-in config): its target task's unaugmented
training split calibrates int8 and feeds the warmup requests, and its
validation split (the training split when it has no validation examples;
never the test split: publishing is a choice) is what every artefact is
verified on. A run directory's ``report.json`` gives the class names and the
ensemble weights its report chose (`keras_team.predictions.read_run`).

Layout under `out_dir`:

- ``serving/<name>/<version>/``: the SavedModel (TF Serving layout, with warmup
  requests) and ``serving/models.config``;
- ``litert/<name>.<quantization>.tflite``: one LiteRT file per format ``tflite-<quantization>``,
  its class names beside it in ``litert/<name>.<quantization>.labels.txt``;
- ``export_report.json``: the parity report of `keras_team.export.verify`.

Example:
    $ keras-team export runs/digits --formats saved_model,tflite,tflite-int8
    $ keras-team export model.keras --config my.yaml --name digits --version 3
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pathlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence

import keras
import numpy as np

from keras_team.app.config import load_config
from keras_team.app.recipe import load_tasks
from keras_team.app.workspace import check_writable
from keras_team.files import load_model
from keras_team.data import Task
from keras_team.errors import ExportFailed, KerasTeamError
from keras_team.export.formats import FORMATS, check_formats
from keras_team.export.litert import CALIBRATION_EXAMPLES, labels_path, tflite_files
from keras_team.export.parity import parity_report, raise_misses
from keras_team.export.savedmodel import version_dir, write_version
from keras_team.export.serving import serving_config
from keras_team.files import TEMPORARY_PREFIX, move_into_place, remove_temporaries, write_text
from keras_team.predictions import RUN_MODEL, RUN_REPORT, read_run
from keras_team.team import Team

REPORT = "export_report.json"
LOCK = ".lock"
WARMUP_EXAMPLES = 10
RUN_CONFIG = "config.yaml"


def export_model(
    model: keras.Model,
    out_dir: str | os.PathLike,
    *,
    name: str,
    formats: Sequence[str],
    train_examples: np.ndarray,
    examples: np.ndarray,
    labels: np.ndarray | None = None,
    verified_on: str,
    input_dtype: str | None = None,
    version: int | None = None,
    force: bool = False,
    tolerances: Mapping[str, Mapping[str, float]] | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    calibration_examples: int = CALIBRATION_EXAMPLES,
) -> dict:
    """Write every format of `model` under `out_dir`, then verify each on held-out `examples`.

    Args:
        model: the Keras model or Team.
        out_dir: the export directory (layout in the module docstring).
        name: the model's name for TF Serving and the LiteRT file names.
        formats: keys of `FORMATS`.
        train_examples: raw, unaugmented training examples: int8 calibration
            and warmup requests come from them.
        examples, labels: held-out examples the artefacts are verified on,
            and whether each is published (validation data: `verification_data`).
        verified_on: the split `examples` come from, recorded in the report.
        input_dtype: dtype of the raw examples; default that of `train_examples`.
        version, force: the SavedModel version (default the next free) and
            whether to replace it.
        tolerances: per format overrides of `keras_team.export.TOLERANCES`.
        seed: seeds the int8 calibration sample.
        class_names, weights: the classes' names and the team ensemble's
            weights (`labelled`), for the SavedModel's class outputs and the labels.
        calibration_examples: how many of `train_examples` calibrate int8.

    Returns:
        The parity report (also in `out_dir/export_report.json`), with
        ``verified_on`` and the artefact paths; raises `ExportFailed` when
        an artefact misses its tolerance or cannot be made.

    Every artefact is written and verified in a temporary folder inside
    `out_dir` (``.tmp-*``), and only then renamed into place: an artefact
    that misses its tolerance or cannot be made is never published
    (``"passed": false`` in the report, with its figures) while the others
    that pass are, and an export killed at any moment leaves published
    artefacts whole and verified, no report describing other files, and a
    temporary folder the next export into `out_dir` removes (saying so).
    """
    formats = check_formats(formats)
    expected = tuple(model.inputs[0].shape[1:]) if len(model.inputs or ()) == 1 else None
    for field, given in (("train_examples", train_examples), ("examples", examples)):
        if expected is not None and tuple(np.shape(given)[1:]) != expected:
            raise KerasTeamError(field, f"examples shaped {tuple(np.shape(given)[1:])}",
                                 f"examples shaped like the model input {expected} (data from another config?)")
    out_dir = pathlib.Path(out_dir)
    input_dtype = input_dtype or np.asarray(train_examples).dtype.name
    final = {fmt: out_dir / "litert" / f"{name}.{FORMATS[fmt]}.tflite" for fmt in formats if FORMATS[fmt]}
    if "saved_model" in formats:
        final["saved_model"] = version_dir(out_dir / "serving", name, version, force=force)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: dict[str, KerasTeamError] = {}
    with _locked(out_dir):
        _remove_leftovers(out_dir, name)
        (out_dir / REPORT).unlink(missing_ok=True)  # a report never describes files it did not check
        with tempfile.TemporaryDirectory(prefix=TEMPORARY_PREFIX, dir=out_dir) as staging:
            staged = {fmt: pathlib.Path(staging) / path.relative_to(out_dir) for fmt, path in final.items()}
            try:
                if "saved_model" in staged:
                    write_version(model, staged["saved_model"], name=name, input_dtype=input_dtype,
                                  warmup=np.asarray(train_examples[:WARMUP_EXAMPLES]), class_names=class_names,
                                  weights=weights)
                litert_files = {staged[fmt]: FORMATS[fmt] for fmt in formats if FORMATS[fmt]}
                if litert_files:
                    failed: dict = {}  # a file the converter cannot make: reported, the others still checked
                    tflite_files(model, litert_files, representative_data=train_examples, input_dtype=input_dtype,
                                 seed=seed, class_names=class_names, calibration_examples=calibration_examples,
                                 failed=failed)
                    failures = {fmt: failed[staged[fmt]] for fmt in litert_files_formats(formats) if staged[fmt] in failed}
            except OSError as error:  # a full disk: name the output directory, not the temporary one
                if error.filename and pathlib.Path(error.filename).is_relative_to(staging):
                    error.filename = str(out_dir)
                raise
            report = {"verified_on": verified_on,
                      **parity_report(model, {fmt: staged[fmt] for fmt in formats if fmt not in failures}, examples,
                                      labels, tolerances=tolerances, weights=weights)}
            for fmt, entry in report["artefacts"].items():
                entry["path"] = str(final[fmt])
                if entry["passed"]:  # only a verified artefact is published
                    if FORMATS[fmt]:  # a LiteRT file's labels first: a published file has its labels
                        move_into_place(labels_path(staged[fmt]), labels_path(final[fmt]))
                    move_into_place(staged[fmt], final[fmt], replace=force or fmt != "saved_model")
        if "saved_model" in formats and report["artefacts"]["saved_model"]["passed"]:
            serving_config(out_dir / "serving", names=[name])
        for fmt, error in failures.items():  # the figures of every artefact, the missed and failed ones included
            report["artefacts"][fmt] = {"path": str(final[fmt]), "size_bytes": 0, "signatures": {},
                                        "misses": [f"not made: {error}"], "passed": False}
        report["artefacts"] = {fmt: report["artefacts"][fmt] for fmt in formats}
        report["passed"] = all(entry["passed"] for entry in report["artefacts"].values())
        write_text(out_dir / REPORT, json.dumps(report, indent=2) + "\n")
    for fmt in formats:  # the first failure, in the order asked
        if fmt in failures:
            raise ExportFailed(f"artefact {fmt} ({failures[fmt].field})", failures[fmt].value, failures[fmt].allowed)
        if not report["artefacts"][fmt]["passed"]:
            raise_misses({"artefacts": {fmt: report["artefacts"][fmt]}})
    return report


def litert_files_formats(formats: Sequence[str]) -> list[str]:
    """The LiteRT formats among `formats`, in order.

    Example:
        >>> litert_files_formats(["saved_model", "tflite-int8", "tflite"])
        ['tflite-int8', 'tflite']
    """
    return [fmt for fmt in formats if FORMATS[fmt]]


def verification_data(task: Task) -> tuple[str, np.ndarray, np.ndarray]:
    """The split artefacts are verified on, its examples and labels: validation, else train; never test.

    Whether an artefact is published is a choice, and choices are made on
    validation data. A task without validation examples falls back to its
    training split (which also calibrates int8: a milder check for int8).

    Example:
        >>> split, examples, labels = verification_data(target)
        >>> split, len(labels) == len(target.labels("validation"))
        ('validation', True)
    """
    split = "validation" if len(task.labels("validation")) else "train"
    return split, task.images(split), task.labels(split)


def labelled(model: keras.Model, task: Task) -> dict:
    """`export_model`'s class names and, for a Team, the ensemble weights a run's report would choose.

    For a model without a run's report (a run's export takes the weights
    its report uses): `keras_team.app.report.ensemble_choice` on the task's
    validation split (None, equal weights, for a single model).

    Example:
        >>> labelled(team, target)["class_names"]
        ('5', '6', '7', '8', '9')
    """
    from keras_team.app.report import ensemble_choice  # matplotlib only when a team needs weights

    weights = ensemble_choice(model, task).weighting.weights if isinstance(model, Team) else None
    return {"class_names": task.class_names, "weights": weights}


@contextlib.contextmanager
def _locked(out_dir: pathlib.Path) -> Iterator[None]:
    """Hold `out_dir`'s lock: two exports never write (or clean) one directory at once."""
    handle = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KerasTeamError("output_dir", str(out_dir), "a directory no other export is writing "
                                 "(another keras-team export holds its lock)") from None
        yield
    finally:
        os.close(handle)


def _remove_leftovers(out_dir: pathlib.Path, name: str) -> None:
    """Delete what an export killed midway left (never published), saying so in one line."""
    removed = [path for folder in (out_dir, out_dir / "litert", out_dir / "serving", out_dir / "serving" / name)
               for path in remove_temporaries(folder)]
    if removed:
        print(f"keras-team: removed what an interrupted export left unpublished in {out_dir}: "
              f"{', '.join(str(path.relative_to(out_dir)) for path in removed)}", flush=True)


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
    if args.calibration_examples < 1:
        raise KerasTeamError("--calibration-examples", args.calibration_examples, "a positive number of examples")
    model_file, config_file, out_dir, name = _sources(pathlib.Path(args.path), args.config)
    out_dir = pathlib.Path(args.output_dir or out_dir)
    check_writable(out_dir, "--output-dir")
    config = load_config(config_file)
    _, target = load_tasks(config)
    run_dir = pathlib.Path(args.path)
    if run_dir.is_dir() and (run_dir / RUN_REPORT).is_file():
        model, class_names, weights = read_run(run_dir)  # the weights the run's report chose
        names = {"class_names": class_names, "weights": weights}
    else:
        model = load_model(model_file, compile=False, field="path")  # exporting needs no optimizer
        names = labelled(model, target)
    split, examples, labels = verification_data(target)
    report = export_model(model, out_dir, name=args.name or name, formats=formats,
                          train_examples=target.images("train"), examples=examples, labels=labels, verified_on=split,
                          version=args.version, force=args.force, seed=config.seed,
                          calibration_examples=args.calibration_examples, **names)
    for label, entry in summary(report).items():
        print(f"{label:22s} {entry['size_bytes'] / 1024:9.1f} KiB  max|diff| {entry['max_abs_diff']:.2e}  "
              f"top-1 agreement {entry['top1_agreement']:.4f}  {entry['path']}")
    print(f"\nverified on {report['examples']} {report['verified_on']} examples; report in {out_dir / REPORT}")
