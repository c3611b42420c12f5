"""`keras-team export`: a run's team, or any `.keras` team or model file, as deployment artefacts.

The data comes from a keras-team config: the run's own ``config.yaml``, or
``--config`` (default: the built-in config): its target task's unaugmented
training split calibrates int8 and feeds the warmup requests, and its test
split is what every artefact is verified on.

Example:
    $ keras-team export runs/digits --formats saved_model,tflite,tflite-int8
    $ keras-team export model.keras --config my.yaml --name digits --version 3
"""

from __future__ import annotations

import argparse
import pathlib

from keras_team.errors import KerasTeamError

DEFAULT_FORMATS = "saved_model,tflite,tflite-int8"
RUN_MODEL = "team.keras"
RUN_CONFIG = "config.yaml"


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `export` subcommand to the `keras-team` parser."""
    parser = commands.add_parser("export", help="export a run's team (or a .keras file) for TF Serving and LiteRT, verified")
    parser.add_argument("path", help="a finished run's directory, or a .keras team or model file")
    parser.add_argument("--formats", default=DEFAULT_FORMATS,
                        help="comma-separated: saved_model, tflite (float32), tflite-dynamic, tflite-float16, "
                             "tflite-int8 (int8 I/O), tflite-int8-float-io (default: %(default)s)")
    parser.add_argument("--output-dir", help="where to write (default: <run dir>/export, or export/ next to the file)")
    parser.add_argument("--name", help="the model's name for TF Serving (default: the run's team, or the file's stem)")
    parser.add_argument("--version", type=int, help="SavedModel version (default: the next free one)")
    parser.add_argument("--force", action="store_true", help="replace an existing SavedModel version")
    parser.add_argument("--config", help="config naming the data (default: the run's config.yaml, else the built-in one)")
    return parser


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
    from keras_team.app.config import load_config
    from keras_team.export.stage import check_formats

    formats = check_formats([fmt.strip() for fmt in args.formats.split(",") if fmt.strip()])
    model_file, config_file, out_dir, name = _sources(pathlib.Path(args.path), args.config)
    config = load_config(config_file)
    import keras

    from keras_team.app.recipe import load_tasks
    from keras_team.export.stage import export_model

    try:
        model = keras.models.load_model(model_file)
    except Exception as error:  # Keras raises many types for unreadable or corrupt files
        raise KerasTeamError("path", str(model_file), f"a readable .keras file ({type(error).__name__}: {error})") from error
    _, target = load_tasks(config)
    x_test, y_test = target.splits["test"]
    report = export_model(model, args.output_dir or out_dir, name=args.name or name, formats=formats,
                          train_examples=target.splits["train"][0], test_examples=x_test, test_labels=y_test,
                          version=args.version, force=args.force, seed=config.seed)
    for label, entry in report["artefacts"].items():
        worst = max((f["max_abs_diff"] for sig in entry["signatures"].values() for f in sig.values()), default=0.0)
        agree = min((f["top1_agreement"] for sig in entry["signatures"].values() for f in sig.values()), default=1.0)
        print(f"{label:22s} {entry['size_bytes'] / 1024:9.1f} KiB  max|diff| {worst:.2e}  top-1 agreement {agree:.4f}  {entry['path']}")
    print(f"\nverified on {report['examples']} test examples; report in {pathlib.Path(args.output_dir or out_dir) / 'export_report.json'}")
