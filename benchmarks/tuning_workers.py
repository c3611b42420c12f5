"""One fixed `keras-team tune` search with one worker and with two workers.

Each run is the real command, `keras-team tune --config F --workers K`, in a
fresh subprocess and a fresh output directory: a chief (this machine's
loopback oracle) plus K worker processes, KerasTuner's own distributed mode.
The search is fixed (RandomSearch, same seed, trials and epochs) and reads a
leader trained once beforehand (untimed), so both runs do the same work; the
wall time includes every process's TensorFlow start. `keras-team tune`
deals this machine's cores out to its local workers, so the one worker
computes on both cores and each of the two on one of its own. The ratio is 1-worker time over 2-worker time;
on a machine whose cores are busy with other work it says more about the
machine than about the search.

Run from the repository root:

    python benchmarks/tuning_workers.py        # writes benchmarks/results/tuning_workers.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import yaml

from _common import RESULTS, load_average, machine, stopwatch, write_json

NAME = "tuning_workers"


def train_leader(path: pathlib.Path) -> None:
    """The default config's leader (residual_cnn on digits 0-4), saved for both runs."""
    code = (
        "import keras, keras_team, sys\n"
        "source, _ = keras_team.data.digits_tasks()\n"
        "keras.utils.set_random_seed(0)\n"
        "leader = keras_team.zoo.residual_cnn(source.input_shape, source.num_classes, name='leader')\n"
        "leader.compile('adam', keras_team.heads.LOSS)\n"
        "leader.fit(*source.splits['train'], epochs=5, verbose=0)\n"
        "leader.save(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    load_before = load_average()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        train_leader(root / "leader.keras")
        for workers in (1, 2):
            config = {
                "leader": {"path": str(root / "leader.keras")},
                "tune": {"output_dir": str(root / f"tune{workers}"), "max_trials": args.trials, "epochs": args.epochs,
                         "validation_per_class": 10, "space": {"cuts": ["stem_relu", "pool1", "block2_out"]}},
            }
            path = root / f"config{workers}.yaml"
            path.write_text(yaml.safe_dump(config))
            with stopwatch() as took:  # wall time: the work runs in the subprocesses
                subprocess.run([sys.executable, "-m", "keras_team_cli", "tune", "--config", str(path),
                                "--workers", str(workers)], check=True)
            seconds = took["wall_seconds"]
            table = json.loads((root / f"tune{workers}" / "trials.json").read_text())
            runs[str(workers)] = {"wall_seconds": round(seconds, 1), "trials": len(table["trials"]),
                                  "trial_seconds": [t["seconds"] for t in table["trials"]],
                                  "ran_by": sorted({t["tuner_id"] for t in table["trials"]})}
            print(f"{workers} worker(s): {seconds:.1f} s for {len(table['trials'])} trials", flush=True)
    ratio = runs["1"]["wall_seconds"] / runs["2"]["wall_seconds"]
    result = {
        "benchmark": NAME,
        "what": "one fixed keras-team tune search (chief + K local workers, loopback oracle), wall time",
        "trials": args.trials, "epochs": args.epochs, "runs": runs,
        "speedup_two_workers": round(ratio, 2),
        "machine": machine(load_before),
    }
    write_json(args.output, result)
    print(f"1 worker / 2 workers wall time: {ratio:.2f}x")
    return result


if __name__ == "__main__":
    main()
