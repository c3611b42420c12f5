"""Copying only the kept part vs cloning the whole leader, for an early cut.

`keras_team.body` copies the layer calls up to the cut (a functional model
from the leader's inputs to the cut, cloned). The slower way, the one
`transfer` took before, clones the whole leader with `clone_model`, copies
all its weights and then cuts the clone. Both run in their own fresh Python
process on the same leader (ResNet50, random weights, 1000 classes, 96x96x3
inputs) and the same cut (`pool1_pool`, after the stem); each process
reports the seconds taken, the parameters it created, and its peak resident
memory above what it held once the leader was built. Offline.

Run from the repository root:

    python benchmarks/transfer_clone.py     # writes benchmarks/results/transfer_clone.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

from _common import RESULTS, load_average, machine, write_json  # noqa: E402
NAME = "transfer_clone"
CUT = "pool1_pool"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(way: str) -> dict:
    """Build the leader, then copy its kept part `way` ("kept" or "whole"); in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import keras_team

    leader = keras.applications.ResNet50(weights=None, input_shape=(96, 96, 3), classes=1000)
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    reference = keras.Model(leader.inputs, leader.get_layer(CUT).output)(x)
    baseline = _peak_mib()
    start = time.perf_counter()
    if way == "kept":
        kept = keras_team.body(leader, CUT)
    else:
        clone = keras.models.clone_model(leader)
        clone.set_weights(leader.get_weights())
        kept = keras.Model(clone.inputs, clone.get_layer(CUT).output)
        created = clone.count_params()
    seconds = time.perf_counter() - start
    np.testing.assert_allclose(kept(x), reference, rtol=1e-5, atol=1e-5)  # same features either way
    return {
        "seconds": round(seconds, 3),
        "parameters_created": kept.count_params() if way == "kept" else created,
        "peak_rss_above_leader_mib": round(_peak_mib() - baseline, 1),
        "leader_parameters": leader.count_params(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS / f"{NAME}.json")
    parser.add_argument("--way", choices=("whole", "kept"), help=argparse.SUPPRESS)  # one measuring subprocess
    args = parser.parse_args()
    if args.way:
        print(json.dumps(measure(args.way)))
        return
    load_before = load_average()
    ways = {}
    for way in ("whole", "kept"):
        done = subprocess.run([sys.executable, __file__, "--way", way], check=True, capture_output=True, text=True)
        ways[way] = json.loads(done.stdout.strip().splitlines()[-1])
    result = {
        "benchmark": NAME,
        "leader": "keras.applications.ResNet50(weights=None, input_shape=(96, 96, 3), classes=1000)",
        "cut": CUT,
        "whole_clone_then_cut": ways["whole"],
        "kept_subgraph_only": ways["kept"],
        "time_ratio_whole_over_kept": round(ways["whole"]["seconds"] / ways["kept"]["seconds"], 1),
        "parameter_ratio_whole_over_kept": round(
            ways["whole"]["parameters_created"] / ways["kept"]["parameters_created"], 1
        ),
        "machine": machine(load_before),
    }
    write_json(args.output, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
