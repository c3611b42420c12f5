"""`keras-team tune`: a KerasTuner search of the cut, the head and the fine-tuning.

Registered in `keras_team.app.cli` with `add_parser(subparsers)` and run by
`handle(args)`. The config is checked before TensorFlow starts.

Example:
    $ keras-team tune --config my.yaml --tuner bayesian --max-trials 20
    $ keras-team tune --config my.yaml --workers 2      # a chief and 2 workers on this machine
    $ keras-team run --config runs/digits-tune/best_config.yaml
"""

from __future__ import annotations

import argparse

from keras_team.app.config import load_config
from keras_team.errors import KerasTeamError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `tune` command to the `keras-team` subcommands.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_parser(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["tune", "--max-trials", "3"]).max_trials
        3
    """
    tune = subparsers.add_parser(
        "tune", help="search the cut, head and fine-tuning with KerasTuner (validation data only); write the best config")
    tune.add_argument("--config", help="YAML config; its tune: section is the search (default: the built-in one)")
    tune.add_argument("--output-dir", help="overrides tune.output_dir")
    tune.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="override a config field, e.g. --set tune.space.cuts=[pool1,block2_out] (repeatable)")
    tune.add_argument("--tuner", help="overrides tune.tuner: random, bayesian, hyperband or grid")
    tune.add_argument("--max-trials", type=int, help="overrides tune.max_trials")
    tune.add_argument("--workers", type=int, default=0,
                      help="run a chief and this many workers on this machine (KerasTuner's distributed mode)")
    tune.add_argument("--overwrite", action="store_true", help="replace a finished search in the output directory")
    return tune


def handle(args: argparse.Namespace) -> None:
    """Run `keras-team tune` (or this process's part of a distributed search)."""
    overrides = list(args.set)
    for field, value in (("output_dir", args.output_dir), ("tuner", args.tuner), ("max_trials", args.max_trials)):
        if value is not None:
            overrides.append(f"tune.{field}={value}")
    if args.overwrite:
        overrides.append("tune.overwrite=true")
    if args.workers < 0:
        raise KerasTeamError("--workers", args.workers, "an int >= 0")
    config = load_config(args.config, overrides)
    from keras_team.tuning.job import BEST, TuneJob

    job = TuneJob(config)
    best = job.run(workers=args.workers)
    if best is None:  # a worker: the chief writes the results
        return
    print(f"\nbest: {best}")
    print(f"trials.csv, trials.json, score_by_cut.png and {BEST} in {job.root}/")
    print(f"train it: keras-team run --config {job.root / BEST}")
