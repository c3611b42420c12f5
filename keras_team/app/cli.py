"""`keras-team`: init a config, run the recipe, evaluate a saved team.

User mistakes print one line and exit with status 2; the config is checked
before TensorFlow starts.

Example:
    $ keras-team init my.yaml
    $ keras-team run --config my.yaml --set transfer.keep=fc1
    $ keras-team evaluate runs/digits
    $ keras-team schema > keras-team.schema.json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence

from keras_team.app.config import default_config_text, json_schema_text, load_config
from keras_team.errors import KerasTeamError
from keras_team.export import cli as export_cli

USER_ERROR = 2
INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-team", description="Transfer learning as a team of Keras models.")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="write the default config, with a comment on every field")
    init.add_argument("path", nargs="?", default="keras-team.yaml", help="where to write it (default: %(default)s)")
    init.add_argument("--force", action="store_true", help="replace an existing file")

    run = commands.add_parser("run", help="train leader, transfer, followers and baseline; write the report")
    run.add_argument("--config", help="YAML config (default: the built-in one, see `keras-team init`)")
    run.add_argument("--output-dir", help="overrides output_dir of the config")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a config field, e.g. --set transfer.keep=fc1 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    run.add_argument("--strategy", help="overrides distribute.strategy: auto, default or mirrored")

    commands.add_parser("schema", help="print the config's JSON schema (for editors)")

    evaluate = commands.add_parser("evaluate", help="score a run's saved team on its target task")
    evaluate.add_argument("run_dir", nargs="?", default="runs/digits", help="a finished run's directory (default: %(default)s)")
    evaluate.add_argument("--split", default="test", choices=("test", "validation", "train"))
    export_cli.add_parser(commands)
    return parser


def _init(args) -> None:
    path = pathlib.Path(args.path)
    if path.exists() and not args.force:
        raise KerasTeamError("path", str(path), "a file that does not exist yet (or pass --force to replace it)")
    from keras_team.app.workspace import write_text

    write_text(path, default_config_text())
    print(f"wrote {path}; edit it, then: keras-team run --config {path}")


def _run(args) -> None:
    overrides = list(args.set)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.strategy:
        overrides.append(f"distribute.strategy={args.strategy}")
    config = load_config(args.config, overrides)
    from keras_team.app.recipe import run
    from keras_team.app.report import format_table

    report = run(config, verbose=2 if args.quiet else None)
    print()
    print(format_table(report))
    print(f"\nreport, plots and models in {config.output_dir}/")


def _evaluate(args) -> None:
    run_dir = pathlib.Path(args.run_dir)
    for name in ("config.yaml", "team.keras"):
        if not (run_dir / name).is_file():
            raise KerasTeamError("run_dir", str(run_dir), f"a keras-team run directory holding {name}")
    config = load_config(run_dir / "config.yaml")
    import keras

    from keras_team.app.recipe import load_tasks
    from keras_team.app.report import evaluate_team, format_table

    _, target = load_tasks(config)
    try:
        team = keras.models.load_model(run_dir / "team.keras")
    except Exception as error:  # a corrupt or foreign file
        raise KerasTeamError("run_dir", str(run_dir), f"a readable team.keras ({type(error).__name__}: {error})") from error
    baseline_path = run_dir / "baseline.keras"
    baseline = keras.models.load_model(baseline_path) if baseline_path.is_file() else None
    print(format_table(evaluate_team(team, target, split=args.split, baseline=baseline)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-team` console script."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        {"init": _init, "run": _run, "evaluate": _evaluate, "schema": lambda _: print(json_schema_text(), end=""),
         "export": export_cli.handle}[
            args.command
        ](args)
    except KerasTeamError as error:
        print(f"keras-team: error: {error}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("\nkeras-team: interrupted; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
