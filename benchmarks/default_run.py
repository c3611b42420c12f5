"""The default `keras-team run` in a fresh subprocess: wall seconds and peak memory.

Runs `keras-team run --output-dir <temp dir>` (the built-in config, offline
digits) as a child process, TensorFlow start included, pinned to at most
`--cores` CPUs, and records its wall time and peak resident memory
(`ru_maxrss` of the child). Targets: < 120 s on 2 CPU cores, < 3 GB peak.

Each run is broken down with the per-stage `seconds` of its `report.json`
(leader, transfer, followers, baseline, ...) and a separately timed fresh
`import keras_team.app.recipe` (TensorFlow start), so the remainder (saving
models, evaluating, plots) is visible too; that says where the time goes.

The slower way, run right after in the same way: the same run with a stage
checkpoint after every epoch (`recipe.CHECKPOINT_SECONDS = 0`), as Keras'
`BackupAndRestore` wrote it before the stages checkpointed by time; the JSON
records the ratio of their stage seconds, and the stage seconds the issue
that asked for this reported before (quiet machine). `--deterministic-too`
also runs the same config with `--set deterministic=true` (TF op
determinism) and records its time and memory as a ratio to the default run.
The 1-, 5- and 15-minute load averages are recorded before and after each
run: the runs are only comparable on a quiet machine.

Run from the repository root, one benchmark at a time:

    python benchmarks/default_run.py                      # writes benchmarks/results/default_run.json
    python benchmarks/default_run.py --no-slower          # the default run alone
    python benchmarks/default_run.py --deterministic-too  # plus the deterministic run
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
NAME = "default_run"
TARGET_SECONDS = 120.0
TARGET_PEAK_BYTES = 3 * 1024**3
TARGET_STAGE_SECONDS = 25.0
# Issue 17, a fresh clone on a quiet 2-core machine, stages checkpointing every epoch.
REPORTED_BEFORE = {"leader": 10.8, "transfer": 14.3, "followers": 15.9, "baseline": 17.6}
EVERY_EPOCH = "from keras_team.app import recipe; recipe.CHECKPOINT_SECONDS = 0"
REPO = pathlib.Path(__file__).resolve().parent.parent


def keras_team_command(prelude: str = "") -> list[str]:
    """The installed console script next to this interpreter (else `python -m keras_team.app.cli`);
    with `prelude`, Python run in the same process first."""
    script = pathlib.Path(sys.executable).parent / "keras-team"
    if prelude:
        return [sys.executable, "-c", f"import sys; {prelude}; from keras_team.app import cli; sys.exit(cli.main())"]
    return [str(script)] if script.is_file() else [sys.executable, "-m", "keras_team_cli"]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pinned(cores: int):
    """A preexec_fn restricting the child to the first `cores` CPUs this process may use."""
    allowed = sorted(os.sched_getaffinity(0))[:cores]
    return (lambda: os.sched_setaffinity(0, allowed)), len(allowed)


def run_child(command: list[str], cores: int, label: str) -> dict:
    """Run `command`, echo its output as it comes, return wall seconds, exit code and peak RSS."""
    preexec, used = pinned(cores)
    print(f"\n== {label}: {' '.join(command)}  (on {used} core(s))", flush=True)
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, bufsize=1, preexec_fn=preexec)
    tail = []
    for line in child.stdout:  # the child's own per-epoch lines are the progress display
        print(f"  | {line}", end="", flush=True)
        tail = (tail + [line.rstrip()])[-20:]
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not the sum of all children
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "returncode": child.returncode, "peak_rss_bytes": usage.ru_maxrss * 1024,
            "cores": used, "tail": tail}


STAGE_ORDER = ("leader", "transfer", "fine_tune", "followers", "team", "baseline", "evaluate")


def stage_seconds(stages: dict) -> dict:
    """Seconds per stage of report.json, in recipe order; the followers stage holds one entry per follower."""
    out = {}
    order = sorted(stages, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER))
    for stage in order:
        figures = stages[stage]
        if "seconds" in figures:
            out[stage] = figures["seconds"]
        else:
            nested = {name: fig["seconds"] for name, fig in figures.items() if isinstance(fig, dict) and "seconds" in fig}
            if nested:
                out[stage] = sum(nested.values())
                out.update({f"{stage}.{name}": sec for name, sec in nested.items()})
    return out


def one_run(cores: int, extra: list[str], label: str, keep: bool, prelude: str = "") -> dict:
    output_dir = tempfile.mkdtemp(prefix="keras_team_bench_")
    load_before = load_average()
    try:
        child = run_child([*keras_team_command(prelude), "run", "--output-dir", output_dir, *extra], cores, label)
        report_path = pathlib.Path(output_dir) / "report.json"
        if child["returncode"] != 0 or not report_path.is_file():
            print("\n".join(child["tail"]), file=sys.stderr)
            raise SystemExit(f"{label}: keras-team run failed (exit {child['returncode']})")
        report = json.loads(report_path.read_text())
    finally:
        if not keep:
            shutil.rmtree(output_dir, ignore_errors=True)
    stages = stage_seconds(report.get("stages", {}))
    top_level = sum(sec for name, sec in stages.items() if "." not in name)
    return {
        "command": f"keras-team run --output-dir <tmp> {' '.join(extra)}".strip(),
        **({"prelude": prelude} if prelude else {}),
        "load_average_1_5_15min": {"before": load_before, "after": load_average()},
        "wall_seconds": round(child["seconds"], 2),
        "peak_rss_bytes": child["peak_rss_bytes"],
        "peak_rss_gib": round(child["peak_rss_bytes"] / 1024**3, 3),
        "cores": child["cores"],
        "stage_seconds": {name: round(sec, 2) for name, sec in stages.items()},
        "stages_total_seconds": round(top_level, 2),
        "outside_stages_seconds": round(child["seconds"] - top_level, 2),
        "test_accuracy": {
            **{name: m["test_accuracy"] for name, m in report["members"].items()},
            "ensemble": report["ensemble"]["test_accuracy"],
            **({"baseline": report["baseline"]["test_accuracy"]} if "baseline" in report else {}),
        },
        **({"output_dir": output_dir} if keep else {}),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", type=int, default=2, help="CPUs the child may use (default %(default)s)")
    parser.add_argument("--deterministic-too", action="store_true",
                        help="also run with --set deterministic=true and compare")
    parser.add_argument("--no-slower", action="store_true",
                        help="skip the slower way (a checkpoint after every epoch)")
    parser.add_argument("--keep", action="store_true", help="keep the runs' output directories")
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    load_before = load_average()

    default = one_run(args.cores, [], "default run", args.keep)
    # Only one child has been waited for so far: RUSAGE_CHILDREN's peak is that child's.
    default["peak_rss_bytes_rusage_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    probe = run_child([sys.executable, "-c", "import time; s = time.perf_counter(); import keras_team.app.recipe; "
                       "print(f'import keras_team.app.recipe (TensorFlow start): {time.perf_counter() - s:.1f} s')"],
                      args.cores, "startup probe")
    result = {
        "benchmark": NAME,
        "what": "the default `keras-team run` (built-in config, offline digits) in a fresh subprocess",
        "default": default,
        "startup_seconds": round(probe["seconds"], 2),
        "startup_peak_rss_gib": round(probe["peak_rss_bytes"] / 1024**3, 3),
        "targets": {
            "wall_seconds_below": TARGET_SECONDS,
            "peak_rss_gib_below": TARGET_PEAK_BYTES / 1024**3,
            "wall_ratio_to_target": round(default["wall_seconds"] / TARGET_SECONDS, 3),
            "peak_ratio_to_target": round(default["peak_rss_bytes"] / TARGET_PEAK_BYTES, 3),
            "met": default["wall_seconds"] < TARGET_SECONDS and default["peak_rss_bytes"] < TARGET_PEAK_BYTES,
            "measured_on_cores": default["cores"],
        },
    }
    before_total = sum(REPORTED_BEFORE.values())
    result["stages_target"] = {
        "stages_seconds_below": TARGET_STAGE_SECONDS,
        "stages_total_seconds": default["stages_total_seconds"],
        "met": default["stages_total_seconds"] <= TARGET_STAGE_SECONDS,
        "reported_before": {"stage_seconds": REPORTED_BEFORE, "stages_total_seconds": before_total,
                            "source": "issue 17: a fresh clone on a quiet 2-core machine, a checkpoint every epoch"},
        "reported_before_over_now": round(before_total / default["stages_total_seconds"], 2),
    }
    if not args.no_slower:
        slower = one_run(args.cores, [], "slower way: a checkpoint after every epoch", args.keep, prelude=EVERY_EPOCH)
        result["every_epoch_checkpoint"] = slower
        result["every_epoch_over_default"] = {
            "stages": round(slower["stages_total_seconds"] / default["stages_total_seconds"], 2),
            "per_stage": {name: round(slower["stage_seconds"][name] / sec, 2)
                          for name, sec in default["stage_seconds"].items() if sec and name in slower["stage_seconds"]},
            "wall": round(slower["wall_seconds"] / default["wall_seconds"], 2),
        }
    if args.deterministic_too:
        slow = one_run(args.cores, ["--set", "deterministic=true"], "deterministic run", args.keep)
        result["deterministic"] = slow
        result["deterministic_over_default"] = {
            "wall": round(slow["wall_seconds"] / default["wall_seconds"], 2),
            "peak_rss": round(slow["peak_rss_bytes"] / default["peak_rss_bytes"], 2),
        }
    result["machine"] = {"cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
                         "load_average_1_5_15min": {"before": load_before, "after": load_average()},
                         "python": platform.python_version()}

    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    targets = result["targets"]
    print(f"\n{NAME}: {default['wall_seconds']:.1f} s wall on {default['cores']} core(s) "
          f"(target < {TARGET_SECONDS:g} s), peak RSS {default['peak_rss_gib']:.2f} GiB (target < 3 GiB): "
          f"{'met' if targets['met'] else 'NOT met'}")
    stages_target = result["stages_target"]
    print(f"stages {stages_target['stages_total_seconds']:.1f} s (target <= {TARGET_STAGE_SECONDS:g} s: "
          f"{'met' if stages_target['met'] else 'NOT met'}; reported before {before_total:.1f} s, "
          f"{stages_target['reported_before_over_now']:.2f}x)")
    if not args.no_slower:
        print(f"a checkpoint after every epoch: stages {result['every_epoch_checkpoint']['stages_total_seconds']:.1f} s, "
              f"{result['every_epoch_over_default']['stages']:.2f}x the default run's")
    print(f"TensorFlow start {result['startup_seconds']:.1f} s; stages "
          + ", ".join(f"{k} {v:.1f} s" for k, v in default["stage_seconds"].items() if "." not in k)
          + f"; outside stages {default['outside_stages_seconds']:.1f} s")
    if args.deterministic_too:
        print(f"deterministic=true: {result['deterministic']['wall_seconds']:.1f} s, "
              f"{result['deterministic_over_default']['wall']:.2f}x the default run's wall time")
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
