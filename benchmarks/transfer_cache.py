"""The transfer and fine-tune stages on cached features (`transfer.cache`) against the full forward every step.

Two `keras-team run`s of MobileNetV3Small (weights None) on the photo
patches (`../shared/data/photo_patches.py`, 64x64 RGB), 20 shots, with
``transfer.unfreeze=1`` (the top weighted layer of the kept part) so both
the frozen phase and the fine-tune phase run, and a dense head (the default
linear probe computes its features once either way); the same config and seed,
``transfer.cache`` true and false. Records each stage's seconds, their
ratios, the test accuracies and the load average, and each run's transfer
stage over its scratch baseline stage (the issue's yardstick: the same
run's own work, so machine state cancels out; the baseline trains for
``transfer.epochs`` too).

    python benchmarks/transfer_cache.py /work/data/patches            # transfer_cache.json
    python benchmarks/transfer_cache.py /work/data/patches --shots 120  # transfer_cache_120shot.json (of 150 per class)
    python benchmarks/transfer_cache.py /work/data/patches --repeats 3  # three pairs, the ratios' medians
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile

from _common import PATCHES_SOURCE, PATCHES_TARGET, RESULTS, load_average, machine, write_json


def run(data: str, out: pathlib.Path, cache: bool, leader_epochs: int, shots: int) -> dict:
    sets = [f"data.source.name={data}", f"data.target.name={data}",
            f"data.source.classes=[{','.join(PATCHES_SOURCE)}]", f"data.target.classes=[{','.join(PATCHES_TARGET)}]",
            f"data.target.shots={shots}", "leader.application=MobileNetV3Small",
            "leader.weights=null", f"leader.epochs={leader_epochs}", "transfer.unfreeze=1",
            "transfer.head.kind=dense", "transfer.learning_rate=0.003",  # a trained head: the probe fits once anyway
            f"transfer.cache={str(cache).lower()}", f"output_dir={out}"]
    command = [sys.executable, "-m", "keras_team.app.cli", "run"] + [a for s in sets for a in ("--set", s)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    report = json.loads((out / "report.json").read_text())
    stages = report["stages"]
    return {"transfer_seconds": stages["transfer"]["seconds"], "fine_tune_seconds": stages["fine_tune"]["seconds"],
            "baseline_seconds": stages["baseline"]["seconds"],
            "transfer_over_baseline": stages["transfer"]["seconds"] / stages["baseline"]["seconds"],
            "transfer_val_accuracy": stages["transfer"].get("val_accuracy"),
            "fine_tune_val_accuracy": stages["fine_tune"].get("val_accuracy"),
            "members": {k: v for k, v in report.items() if k in ("members", "ensemble")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="the photo patches folder (train/, test/)")
    parser.add_argument("--leader-epochs", type=int, default=3)
    parser.add_argument("--shots", type=int, default=20, help="target training examples per class")
    parser.add_argument("--output", help="the JSON file (default: results/transfer_cache.json, or "
                        "transfer_cache_<shots>shot.json for other shots)")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of runs (ratios: their medians)")
    args = parser.parse_args()
    load = load_average()
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            cached = run(args.data, pathlib.Path(tmp) / f"cached{i}", True, args.leader_epochs, args.shots)
            full = run(args.data, pathlib.Path(tmp) / f"full{i}", False, args.leader_epochs, args.shots)
            pairs.append({"cached": cached, "full_forward": full,
                          "transfer_speedup": full["transfer_seconds"] / cached["transfer_seconds"],
                          "fine_tune_speedup": full["fine_tune_seconds"] / cached["fine_tune_seconds"]})
    result = {"shots": args.shots, "pairs": pairs,
              **{ratio: statistics.median(pair[ratio] for pair in pairs)
                 for ratio in ("transfer_speedup", "fine_tune_speedup")},
              "transfer_over_baseline": statistics.median(pair["cached"]["transfer_over_baseline"] for pair in pairs),
              "machine": machine(load)}
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "pairs")}, indent=1, default=str))
    output = args.output or RESULTS / ("transfer_cache.json" if args.shots == 20 else f"transfer_cache_{args.shots}shot.json")
    print(f"wrote {write_json(output, result)}")


if __name__ == "__main__":
    main()
