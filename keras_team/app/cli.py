"""`keras-team`: init a config, check it, run the recipe, list a leader's cuts, evaluate a run.

User mistakes print one line and exit with status 2; an export that fails
(an artefact off its tolerance, a converter error, a full disk) prints one
line and exits with status 3, the run before it kept whole. The config is checked
before TensorFlow starts (`--help`, `init` and `schema` never start it: the
console script, `keras_team_cli`, imports this module without Keras), and the
whole team is built once, untrained, before anything trains. TensorFlow's
C++ INFO lines are hidden unless `--verbose` (``TF_CPP_MIN_LOG_LEVEL=1``, its
own setting, unless already set; the lines it writes at import, before it
reads that setting, are its own and pass); Keras' and TensorFlow's warnings
and errors always reach stderr. `--quiet` prints only the result.

Example:
    $ keras-team init my.yaml
    $ keras-team check --config my.yaml
    $ keras-team cuts residual_cnn --input-shape 8,8,1
    $ keras-team cuts MobileNetV3Small --input-shape 32,32,3 --all
    $ keras-team cuts runs/digits/leader.keras --rank --data digits
    $ keras-team run --config my.yaml --set transfer.keep=fc1
    $ keras-team run --config my.yaml --workers 10.0.0.1:2222,10.0.0.2:2222 --worker-index 0   # on each machine
    $ keras-team evaluate runs/digits
    $ keras-team predict runs/digits new.npz --top 2
    $ keras-team schema > keras-team.schema.json
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import pathlib
import sys
from collections.abc import Sequence

# The command line runs on TensorFlow (its SavedModel/LiteRT export and tf.distribute need it): chosen
# before Keras is imported; a user's other KERAS_BACKEND is refused in `main`.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_team.app.config import default_config_text, json_schema_text, load_config
from keras_team.errors import ExportFailed, KerasTeamError
from keras_team.files import load_model
from keras_team.files import is_out_of_space

USER_ERROR = 2
EXPORT_FAILED = 3  # `run` or `export`: an artefact failed; the trained run and the artefacts verified before it are kept
INTERRUPTED = 130  # Ctrl-C; 143: SIGTERM to a run on a cluster
WORKER_TIMEOUT = 300.0  # seconds `run` waits for the other workers of its cluster
# Zoo architecture -> the smallest height and width it takes (each 2x2 pooling halves them).
ZOO = {"seed_cnn": 4, "residual_cnn": 2}
# What a disk says when it refuses a write: full, over quota, read-only, not this user's.
REFUSED_WRITES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
DEFAULT_EXPORT_FORMATS = "saved_model,tflite,tflite-int8"
CALIBRATION_EXAMPLES = 200  # keras_team.export.litert.CALIBRATION_EXAMPLES (TensorFlow is not imported to parse)
APPLICATION_SHAPE = "224,224,3"  # `keras-team cuts` of a keras.applications name without --input-shape


def _config_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--config", help="YAML config (default: the built-in one, see `keras-team init`)")
    command.add_argument("--output-dir", help="overrides output_dir of the config")
    command.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                         help="override a config field, e.g. --set transfer.keep=fc1 (repeatable)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-team", description="Transfer learning as a team of Keras models.")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="write the default config, with a comment on every field")
    init.add_argument("path", nargs="?", default="keras-team.yaml", help="where to write it (default: %(default)s)")
    init.add_argument("--force", action="store_true", help="replace an existing file")

    check = commands.add_parser("check", help="build the whole team untrained and print the plan; trains nothing")
    _config_arguments(check)
    _cluster_arguments(check)

    run = commands.add_parser("run", help="train leader, transfer, followers and baseline; write the report")
    _config_arguments(run)
    run.add_argument("--dry-run", action="store_true", help="check the config and print the plan, as `keras-team check`")
    run.add_argument("--strategy", help="overrides distribute.strategy: auto, default, mirrored or multi_worker")
    _cluster_arguments(run)
    run.add_argument("--worker-timeout", type=float, default=WORKER_TIMEOUT, metavar="SECONDS",
                     help="on a cluster: how long to wait for the other workers to join (default: %(default)g)")

    cuts = commands.add_parser("cuts", help="list a leader's block outputs, or with --all every cut (for transfer.keep)")
    cuts.add_argument("leader", help=f"a .keras file, a zoo architecture ({', '.join(ZOO)}) "
                                     "or a keras.applications name such as MobileNetV3Small")
    cuts.add_argument("--input-shape", help="for a zoo architecture (required) or an application "
                                            f"(default {APPLICATION_SHAPE}): the input shape, e.g. 32,32,3")
    cuts.add_argument("--classes", type=int, default=10, help="for a zoo architecture or an application: "
                                                               "outputs (default: %(default)s)")
    cuts.add_argument("--all", action="store_true", help="every cut, not only the outputs of the blocks")
    cuts.add_argument("--rank", action="store_true", help="rank the cuts for the target task, best first, by "
                      "leave-one-out nearest-class-mean accuracy of their features (keras_team.rank_cuts; no training)")
    cuts.add_argument("--data", help="with --rank: the target dataset (overrides data.target.name of the default config)")
    cuts.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="with --rank: a config field of the target task, e.g. --set data.target.shots=1 (repeatable)")

    commands.add_parser("schema", help="print the config's JSON schema (for editors)")

    evaluate = commands.add_parser("evaluate", help="score a run's saved team on its target task")
    evaluate.add_argument("run_dir", nargs="?", default="runs/digits", help="a finished run's directory (default: %(default)s)")
    evaluate.add_argument("--split", default="test", choices=("test", "validation", "train"))
    _predict_arguments(commands)
    _export_arguments(commands)
    _tune_arguments(commands)
    for command in commands.choices.values():
        loudness = command.add_mutually_exclusive_group()
        loudness.add_argument("--verbose", action="store_true",
                              help="also TensorFlow's C++ INFO lines (and for run, Keras' line per epoch)")
        loudness.add_argument("--quiet", action="store_true",
                              help="print only the result (warnings and errors still reach stderr)")
    return parser


def _predict_arguments(commands) -> None:
    predict = commands.add_parser("predict", help="name the classes of new images or arrays with a run's team")
    predict.add_argument("run_dir", help="a finished run's directory")
    predict.add_argument("inputs", nargs="+", help="image files, folders of images, or .npz files with an array x")
    predict.add_argument("--member", help="one member's probabilities (default: the team ensemble, as in the report)")
    predict.add_argument("--top", type=int, default=3, help="classes per input (default: %(default)s)")
    predict.add_argument("--json", action="store_true", help="print JSON: input, classes, probabilities per input")


def _cluster_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--workers", metavar="HOST:PORT,...", help="run on several machines: every worker's "
                         "address, the chief first (sets TF_CONFIG; without it a TF_CONFIG in the environment is used)")
    command.add_argument("--worker-index", type=int, help="with --workers: this machine's place in that list (0: the chief)")


def _cluster_flags(args) -> None:
    """Set `TF_CONFIG` from `--workers`/`--worker-index` (without TensorFlow); this worker's port must be free here
    (checked as `keras-team tune` checks its oracle's port)."""
    from keras_team.tf_config import cluster_config
    from keras_team.tuning.distributed import check_port

    if (args.workers is None) != (args.worker_index is None):
        given, missing = ("--workers", "--worker-index") if args.workers else ("--worker-index", "--workers")
        raise KerasTeamError(missing, None, f"set together with {given}")
    if args.workers is not None:
        workers = [w.strip() for w in args.workers.split(",")]
        try:
            os.environ["TF_CONFIG"] = cluster_config(workers, args.worker_index)
        except KerasTeamError as error:
            raise KerasTeamError("--worker-index" if error.field == "index" else "--workers", error.value,
                                 error.allowed) from None
        check_port("0.0.0.0", int(workers[args.worker_index].rsplit(":", 1)[1]), "--workers")


def _join_cluster(args):
    """Set `TF_CONFIG` from `--workers`/`--worker-index`; the cluster this process joins (None: one machine)."""
    from keras_team import distribute
    from keras_team.tuning.distributed import check_port

    _cluster_flags(args)
    here = distribute.cluster()
    if here is not None and args.workers is None:  # a TF_CONFIG of the environment
        check_port("0.0.0.0", int(here.workers[here.index].rsplit(":", 1)[1]), "--workers")
    return here


def _supervised_run(args, argv: Sequence[str] | None) -> int:
    """`run` on a cluster: the checks that need no TensorFlow, then the run itself as a child process whose wait for
    the other workers is bounded by `--worker-timeout` and which SIGINT/SIGTERM stop (`keras_team.app.supervisor`)."""
    from keras_team.app import supervisor

    if not (math.isfinite(args.worker_timeout) and args.worker_timeout > 0):
        raise KerasTeamError("--worker-timeout", args.worker_timeout, "a number of seconds above 0, e.g. 600")
    config = _config(args)
    _cluster_flags(args)
    config.distribute.check_cluster()
    # The same program again (the console script, `python -m ...`, a test driver); from Python, the CLI module.
    command = [sys.executable, *(sys.orig_argv[1:] if argv is None else ["-m", "keras_team.app.cli", *argv])]
    say = (lambda _: None) if args.quiet else (lambda line: print(line, flush=True))
    return supervisor.supervise(command, args.worker_timeout, say)


def _export_arguments(commands) -> None:
    export = commands.add_parser("export", help="export a run's team (or a .keras file) for TF Serving and LiteRT, verified")
    export.add_argument("path", help="a finished run's directory, or a .keras team or model file")
    export.add_argument("--formats", default=DEFAULT_EXPORT_FORMATS,
                        help="comma-separated: saved_model, tflite (float32), tflite-dynamic, tflite-float16, "
                             "tflite-int8 (int8 I/O), tflite-int8-float-io (default: %(default)s)")
    export.add_argument("--output-dir", help="where to write (default: <run dir>/export, or export/ next to the file)")
    export.add_argument("--name", help="the model's name for TF Serving (default: the run's team, or the file's stem)")
    export.add_argument("--version", type=int, help="SavedModel version (default: the next free one)")
    export.add_argument("--force", action="store_true", help="replace an existing SavedModel version")
    export.add_argument("--config", help="config naming the data (default: the run's config.yaml, else the built-in one)")
    export.add_argument("--calibration-examples", type=int, default=CALIBRATION_EXAMPLES, metavar="N",
                        help="tflite-int8: training examples that calibrate it (default: %(default)s; more, or "
                             "other data via --config, when int8 misses its tolerance)")


def _tune_arguments(commands) -> None:
    tune = commands.add_parser(
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


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ INFO lines (its warnings and errors still show), unless `TF_CPP_MIN_LOG_LEVEL` is set."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def _start_tensorflow() -> None:
    """Import TensorFlow and register the package's classes (after the config is checked)."""
    import tensorflow  # noqa: F401

    import keras_team

    keras_team.register()


def _init(args) -> None:
    path = pathlib.Path(args.path)
    if path.exists() and not args.force:
        raise KerasTeamError("path", str(path), "a file that does not exist yet (or pass --force to replace it)")
    if not path.parent.is_dir():
        raise KerasTeamError("path", str(path), f"a file in an existing folder ({path.parent} is not a folder)")
    from keras_team.files import write_text

    try:
        write_text(path, default_config_text())
    except OSError as error:
        raise KerasTeamError("path", str(path), f"a file you may write ({error.strerror})") from None
    if not args.quiet:
        print(f"wrote {path}; edit it, then: keras-team check --config {path}")


def _config(args):
    overrides = list(args.set)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if getattr(args, "strategy", None):
        overrides.append(f"distribute.strategy={args.strategy}")
    return load_config(args.config, overrides)


def _check(args) -> None:
    config = _config(args)
    _start_tensorflow()
    from keras_team.app.recipe import leader_paths, make_plan
    from keras_team.app.workspace import Workspace

    here = _join_cluster(args)
    if here is not None:
        print(f"cluster {here.describe()}")
        if not here.chief:  # the chief checks (and later writes) the directory; this worker only reads it
            print(make_plan(config).describe())
            print(f"output  the chief writes {config.output_dir}/; this worker reads it there (a folder every "
                  "worker reads, e.g. a shared filesystem)")
            return
    workspace = Workspace.prepare(config.output_dir, config, reads=leader_paths(config))
    plan = make_plan(config)
    print(plan.describe())
    action = "resume" if workspace.state["stages"] else "replace the run in" if workspace.replace else "write to"
    print(f"output  would {action} {config.output_dir}/")


def _run(args) -> None:
    if args.dry_run:
        return _check(args)
    config = _config(args)
    _start_tensorflow()
    from keras_team.app.progress import Output
    from keras_team.app.recipe import run
    from keras_team.app.report import TIME_NOTE, format_table

    output = Output("quiet" if args.quiet else "verbose" if args.verbose else None)
    here = _join_cluster(args)
    failed = None
    try:
        report = run(config, output=output)
    except ExportFailed as error:  # the run is finished and saved: its table first, then the export's line
        if error.report is None:
            raise
        report, failed = error.report, error
    if report is None:  # a worker of a cluster other than the chief
        print(f"worker {here.index}: every stage trained; the chief ({here.workers[0]}) writes the report and "
              f"models to {config.output_dir}/")
        return
    if not args.quiet:
        print()
    print(format_table(report))
    if not args.quiet:
        print(f"({TIME_NOTE})")
        print(f"\nreport, plots and models in {config.output_dir}/")
    if failed is not None:
        print(f"the run in {config.output_dir}/ is finished and kept (evaluate, predict); only its export failed: "
              "rerun with other export fields, or use keras-team export", flush=True)
        raise failed


def _zoo_leader(name: str, input_shape: str | None, classes: int):
    """A zoo architecture built for `--input-shape`, with the shape rule as the error."""
    rule = f"height,width,channels: three positive ints, height and width at least {ZOO[name]} for {name}, e.g. 32,32,3"
    if not input_shape:
        raise KerasTeamError("--input-shape", None, rule)
    try:
        shape = tuple(int(s) for s in input_shape.split(","))
    except ValueError:
        raise KerasTeamError("--input-shape", input_shape, rule) from None
    if len(shape) != 3 or min(shape) < 1 or min(shape[:2]) < ZOO[name]:
        raise KerasTeamError("--input-shape", input_shape, rule)
    from keras_team import zoo

    return getattr(zoo, name)(shape, classes)


def _application_leader(name: str, input_shape: str | None, classes: int):
    """A keras.applications network as `run` builds it (without weights: listing cuts downloads nothing)."""
    from keras_team import zoo

    rule = "height,width,channels: three positive ints the application takes, e.g. 224,224,3"
    text = input_shape or APPLICATION_SHAPE
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise KerasTeamError("--input-shape", input_shape, rule) from None
    try:
        return zoo.application(name, shape, classes, weights=None, application_shape=shape)
    except KerasTeamError as error:
        raise KerasTeamError("--input-shape", input_shape, error.allowed) from error


def _cuts(args) -> None:
    _start_tensorflow()
    from keras_team import graph, zoo
    from keras_team.app.recipe import load_leader
    from keras_team.cuts import cut_points, same_weights

    if args.leader in ZOO:
        leader = _zoo_leader(args.leader, args.input_shape, args.classes)
    elif args.leader.endswith(".keras"):
        leader = load_leader(args.leader, None, "leader")  # the rules `run` applies to leader.path
    elif args.leader in zoo.applications():
        leader = _application_leader(args.leader, args.input_shape, args.classes)
    else:
        raise KerasTeamError("leader", args.leader, f"a .keras file, one of {', '.join(ZOO)} "
                             f"or a keras.applications name: {', '.join(zoo.applications())}")
    cuts = cut_points(leader)
    if not cuts:
        raise KerasTeamError("leader", args.leader, f"a model with a cut point (every layer of {leader.name!r} "
                             "has a branch around it, as a team's members or a model with several outputs have)")
    if args.rank:
        return _rank_cuts(args, leader)
    # Every cut with --all; else the block outputs (unless there are none: a model of one weighted layer),
    # those that keep the same weights shown once, as the tuner tries them: the last, naming the others.
    groups = None if args.all else same_weights(cut_points(leader, view="blocks"))
    groups = groups or [[cut] for cut in cuts]
    calls = graph.layer_calls(leader)
    rows = [("keep (name)", "keep (depth)", "output shape", "parameters kept", "same weights as")]
    for *others, cut in groups:
        kept = {id(call.operation): call.operation for call in calls[: cut.position + 1]}  # a layer called twice counts once
        weights = sum(math.prod(w.shape) for op in kept.values() for w in getattr(op, "weights", ()))
        rows.append((cut.name, str(cut.depth), str(cut.output_shape), f"{weights:,}", ", ".join(c.name for c in others)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) if i in (0, 2, 4) else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))).rstrip())


def _rank_cuts(args, leader) -> None:
    """`cuts --rank`: every cut scored on the target's training + validation examples, best first."""
    from keras_team.app.recipe import load_tasks
    from keras_team.data import examples
    from keras_team.transferability import rank_cuts

    config = load_config(None, [*([f"data.target.name={args.data}"] if args.data else []), *args.set])
    _, target = load_tasks(config)
    if tuple(leader.inputs[0].shape[1:]) != tuple(target.input_shape):
        raise KerasTeamError("--data", config.data.target.name, f"a dataset of inputs shaped like the leader's "
                             f"{tuple(leader.inputs[0].shape[1:])}, not {tuple(target.input_shape)}")
    x, y = examples(target, ["train", "validation"], batch_size=128)  # a streamed task is read, never held
    print(f"{target.name}: {len(target.labels('train'))} training + {len(target.labels('validation'))} validation "
          f"examples of {target.num_classes} classes; score: leave-one-out nearest-class-mean accuracy")
    rows = [("rank", "keep (name)", "keep (depth)", "score", "seconds")]
    for rank, scored in enumerate(rank_cuts(leader, x, y), start=1):
        rows.append((str(rank), scored.cut.name, str(scored.cut.depth), f"{scored.score:.3f}", f"{scored.seconds:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) if i == 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())


def _evaluate(args) -> None:
    run_dir = pathlib.Path(args.run_dir)
    for name in ("config.yaml", "team.keras"):
        if not (run_dir / name).is_file():
            raise KerasTeamError("run_dir", str(run_dir), f"a finished keras-team run directory holding {name}")
    config = load_config(run_dir / "config.yaml")
    _start_tensorflow()
    from keras_team.app.recipe import load_tasks
    from keras_team.app.report import evaluate_team, format_table, per_class_table
    from keras_team.team import Team

    _, target = load_tasks(config)
    team = load_model(run_dir / "team.keras", compile=False, field="run_dir")
    if not isinstance(team, Team):
        raise KerasTeamError("run_dir", str(run_dir), f"a run whose team.keras holds a keras_team Team, not a {type(team).__name__}")
    baseline_path = run_dir / "baseline.keras"
    baseline = load_model(baseline_path, compile=False, field="run_dir") if baseline_path.is_file() else None
    report = evaluate_team(team, target, split=args.split, baseline=baseline)
    print(format_table(report))
    print()
    print(per_class_table(report))


def _predict(args) -> None:
    _start_tensorflow()
    from keras_team.app.predict import handle

    handle(args)


def _export(args) -> None:
    _start_tensorflow()
    from keras_team.app.export import handle

    handle(args)


def _tune(args) -> None:
    _start_tensorflow()
    from keras_team.app.tune import handle

    handle(args)


def refused_write(error: OSError) -> str:
    """One line for a write the disk refused: the directory and why (with the bytes needed, where known).

    Example:
        >>> refused_write(OSError(errno.EROFS, "Read-only file system", "/proc/x"))
        'cannot write in /proc (Read-only file system): choose another --output-dir, one you may write to'
    """
    path = pathlib.Path(error.filename) if error.filename else None
    directory = path if path is not None and path.is_dir() else path.parent if path is not None else None
    where = f" in {directory}" if directory is not None else ""
    if not is_out_of_space(error):
        return f"cannot write{where} ({error.strerror}): choose another --output-dir, one you may write to"
    return (f"out of space{where} ({error.strerror}): free some space or choose another --output-dir, "
            "then run the same command again")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `keras-team` with `argv` (default: the command line); the exit status (see `keras_team_cli`)."""
    from keras_team.app import supervisor

    args = _parser().parse_args(argv)
    supervised = supervisor.adopt()  # this process is the run that a supervisor started
    backend = os.environ["KERAS_BACKEND"]
    if backend != "tensorflow" and args.command not in ("init", "schema"):
        print(f"keras-team: error: KERAS_BACKEND={backend!r} is not valid: expected tensorflow, the backend "
              "the command line runs on (unset KERAS_BACKEND or set KERAS_BACKEND=tensorflow)", file=sys.stderr)
        return USER_ERROR
    if not args.verbose:
        quiet_tensorflow()
    commands = {"init": _init, "check": _check, "run": _run, "cuts": _cuts, "evaluate": _evaluate,
                "schema": lambda _: print(json_schema_text(), end=""), "export": _export, "tune": _tune,
                "predict": _predict}
    if args.command == "run" and not args.dry_run and not supervised and (
            args.workers is not None or args.worker_index is not None or os.environ.get("TF_CONFIG")):
        commands["run"] = lambda args: _supervised_run(args, argv)
    status = None
    try:
        status = commands[args.command](args)
    except ExportFailed as error:
        print(f"keras-team: export failed: {error}", file=sys.stderr)
        return EXPORT_FAILED
    except KerasTeamError as error:
        print(f"keras-team: error: {error}", file=sys.stderr)
        return USER_ERROR
    except BrokenPipeError:  # e.g. `keras-team cuts ... | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")
    except OSError as error:
        if error.errno not in REFUSED_WRITES:
            raise
        print(f"keras-team: error: {refused_write(error)}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        if not supervised:  # else the supervisor says it
            print("\nkeras-team: interrupted; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
