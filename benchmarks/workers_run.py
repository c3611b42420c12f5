"""The default `keras-team run` in one process and as two workers on 127.0.0.1: wall and stage seconds, their ratio.

One process runs `keras-team run --output-dir <tmp>` (the built-in config,
offline digits) on the first two usable CPUs; then two workers run the same
command with `--workers 127.0.0.1:P0,127.0.0.1:P1 --worker-index i` and one
shared output directory, each worker pinned to one of the same two CPUs (the
same cores in all, no two processes on one core). Each side runs `--repeats` times
(default 3, alternating); the figures are the medians, every run kept.
Recorded for both: the wall time, each stage's seconds from the chief's `report.json`, the test
accuracies, and the ratio two workers / one process (target: wall <= 2x).
The 1-, 5- and 15-minute load averages before and after each run are
recorded (`_common.machine` too): compare the ratio, measured in one run.

Run from the repository root, under the shared lock on a busy machine:

    python benchmarks/workers_run.py          # writes benchmarks/results/workers_run.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _common import RESULTS, load_average, machine, write_json
from default_run import keras_team_command, stage_seconds

NAME = "workers_run"
TARGET_RATIO = 2.0


def _accuracies(report: dict) -> dict:
    return {**{name: m["test_accuracy"] for name, m in report["members"].items()},
            "ensemble": report["ensemble"]["test_accuracy"],
            **({"baseline": report["baseline"]["test_accuracy"]} if "baseline" in report else {})}


def _run(label: str, output_dir: str, cores: list[list[int]], extra: list[str]) -> dict:
    """Start one `keras-team run` per entry of `cores` (each pinned to those CPUs), wait for all; figures of the chief's report."""
    from keras_team.tuning.distributed import free_port

    workers = ",".join(f"127.0.0.1:{free_port()}" for _ in cores) if len(cores) > 1 else None
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    before = [round(x, 2) for x in os.getloadavg()]
    print(f"== {label} (cores {cores})", flush=True)
    start = time.perf_counter()
    children = []
    for index, allowed in enumerate(cores):
        cluster = ["--workers", workers, "--worker-index", str(index)] if workers else []
        command = [*keras_team_command(), "run", "--quiet", "--output-dir", output_dir, *cluster, *extra]
        children.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         preexec_fn=lambda allowed=allowed: os.sched_setaffinity(0, allowed)))
    outputs = [child.communicate()[0] for child in children]
    seconds = time.perf_counter() - start
    for child, out in zip(children, outputs):
        if child.returncode != 0:
            raise SystemExit(f"{label}: keras-team run failed (exit {child.returncode}):\n{out[-3000:]}")
    report = json.loads(open(os.path.join(output_dir, "report.json")).read())
    stages = stage_seconds(report.get("stages", {}))
    return {"processes": len(cores), "cores": cores, "wall_seconds": round(seconds, 2),
            "load_average_1_5_15min": {"before": before, "after": [round(x, 2) for x in os.getloadavg()]},
            "stage_seconds": {name: round(sec, 2) for name, sec in stages.items()},
            "stages_total_seconds": round(sum(sec for name, sec in stages.items() if "." not in name), 2),
            "test_accuracy": _accuracies(report)}


def _median(results: list[dict]) -> dict:
    """The median wall, stage and total seconds of `results` (runs of one side), with every run kept under "runs"."""
    stages = {name: round(statistics.median(r["stage_seconds"][name] for r in results), 2)
              for name in results[0]["stage_seconds"]}
    return {"processes": results[0]["processes"], "cores": results[0]["cores"],
            "wall_seconds": round(statistics.median(r["wall_seconds"] for r in results), 2),
            "stage_seconds": stages,
            "stages_total_seconds": round(statistics.median(r["stages_total_seconds"] for r in results), 2),
            "test_accuracy": results[0]["test_accuracy"], "runs": results}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", default=[], help="a config override for both runs (as keras-team's)")
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; figures are medians")
    args = parser.parse_args(argv)
    extra = [a for s in args.set for a in ("--set", s)]
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        raise SystemExit("needs two usable CPUs")
    load_before = load_average()
    every = {"one_process": [], "two_workers": []}
    for repeat in range(args.repeats):  # the two sides alternate, so a change of load hits both
        for name, cores in (("one_process", [cpus]), ("two_workers", [[cpus[0]], [cpus[1]]])):
            directory = tempfile.mkdtemp(prefix="keras_team_workers_")
            try:
                every[name].append(_run(f"{name} {repeat + 1}/{args.repeats}", os.path.join(directory, "run"), cores, extra))
            finally:
                shutil.rmtree(directory, ignore_errors=True)
    runs = {name: _median(results) for name, results in every.items()}
    one, two = runs["one_process"], runs["two_workers"]
    ratio = {"wall": round(two["wall_seconds"] / one["wall_seconds"], 2),
             "stages": round(two["stages_total_seconds"] / one["stages_total_seconds"], 2),
             "per_stage": {name: round(two["stage_seconds"][name] / sec, 2)
                           for name, sec in one["stage_seconds"].items() if sec and name in two["stage_seconds"]}}
    result = {"benchmark": NAME,
              "what": "the default `keras-team run` (offline digits) in one process on 2 CPUs vs two workers on "
                      "127.0.0.1, one CPU each",
              "overrides": args.set, "repeats": args.repeats, "figures": "medians of the runs (each run under runs)",
              **runs, "two_over_one": ratio,
              "target": {"wall_ratio_at_most": TARGET_RATIO, "met": ratio["wall"] <= TARGET_RATIO},
              "machine": machine(load_before)}
    path = write_json(args.output, result)
    print(f"{NAME}: one process {one['wall_seconds']:.1f} s (stages {one['stages_total_seconds']:.1f} s), two workers "
          f"{two['wall_seconds']:.1f} s (stages {two['stages_total_seconds']:.1f} s): {ratio['wall']:.2f}x wall "
          f"(target <= {TARGET_RATIO:g}x: {'met' if result['target']['met'] else 'NOT met'}); per stage "
          + ", ".join(f"{k} {v:.2f}x" for k, v in ratio["per_stage"].items()))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
