"""Serving a team as one SavedModel vs its members as four separate SavedModels.

A leader (`keras_team.zoo.residual_cnn`) and three followers
(`keras_team.zoo.mlp` on its features, its logits and its temperature-2
probabilities) are exported three ways with `keras_team.export.saved_model`:

- the team, one SavedModel: its ``serving_default`` returns all four members'
  logits, the shared leader running once;
- the leader alone, one SavedModel;
- four separate SavedModels, one per member, each holding what that member
  needs (a follower's holds its own copy of the leader), called one after
  the other to get the same four outputs.

All are reloaded with `tf.saved_model.load` and called through their
signatures on the same examples, round-robin (one call of each per round, so
a burst of load from other processes hits all alike); medians over rounds
count, at batch 1 (`--rounds`) and batch 64 (a tenth as many rounds). Outputs are checked equal across the ways.

Two leaders: a small one on the bundled 8x8x1 digits (filters 32, 64), where
a call costs little more than TF's fixed per-op overhead, and the
follower_cache benchmark's leader (filters 64, 128, 256) on the digits
upscaled to 32x32x3, where the leader's compute dominates as it does for a
real network. Weights are untrained: timing does not depend on them.

Target: the team's call at most 1.5x the leader's alone (it runs the leader
once); the four separate calls are the slower way it is compared against.

Run from the repository root:

    python benchmarks/export_team_serving.py    # writes benchmarks/results/export_team_serving.json
    python benchmarks/export_team_serving.py --rounds 100
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _common import RESULTS, load_average, machine, median_latencies, write_json  # noqa: E402
from keras_team import Follower, Team, data, export, zoo  # noqa: E402

NAME = "export_team_serving"
TARGET_RATIO = 1.5
BATCHES = (1, 64)


def followers() -> list[Follower]:
    return [Follower(zoo.mlp(10, name="on_features"), tap="features"),
            Follower(zoo.mlp(10, name="on_logits"), tap="logits"),
            Follower(zoo.mlp(10, name="on_probs"), tap="probs", temperature=2.0)]


SETUPS = {
    "digits_8x8x1": {"filters": (32, 64), "upscale": 1},
    "digits_32x32x3": {"filters": (64, 128, 256), "upscale": 4},
}


def upscale(x: np.ndarray, factor: int) -> np.ndarray:
    """8x8x1 uint8 digits -> (8*factor)^2 x 3 (nearest neighbour, channel repeated)."""
    if factor == 1:
        return x
    return np.repeat(np.repeat(np.repeat(x, factor, axis=1), factor, axis=2), 3, axis=3)


def measure(setup: dict, x: np.ndarray, rounds: int, out: pathlib.Path) -> dict:
    """Export the three ways, check they agree, time them round-robin at each batch size."""
    leader = zoo.residual_cnn(x.shape[1:], 10, filters=setup["filters"], name="leader")
    team = Team({"leader": leader}, followers())

    def served(model, name):
        path = export.saved_model(model, out, name=name, input_dtype="uint8")
        return tf.saved_model.load(str(path)).signatures

    team_signatures = served(team, "team")
    leader_signatures = served(leader, "leader")
    separate = {"leader": leader_signatures["leader"]}
    for follower in team.followers:  # a team of the leader and this one follower: its own leader copy
        separate[follower.name] = served(Team({"leader": leader}, [follower]), follower.name)[follower.name]
    timings = {}
    for batch in BATCHES:
        examples = tf.constant(x[:batch])
        together = team_signatures["serving_default"](inputs=examples)
        for name, function in separate.items():
            np.testing.assert_allclose(function(inputs=examples)[name].numpy(), together[name].numpy(), atol=1e-4)
        calls = {
            "team_one_saved_model": lambda e=examples: team_signatures["serving_default"](inputs=e),
            "leader_alone": lambda e=examples: leader_signatures["leader"](inputs=e),
            "four_separate_saved_models": lambda e=examples: [f(inputs=e) for f in separate.values()],
        }
        medians = median_latencies(calls, rounds if batch == 1 else max(10, rounds // 10), warmup=5)
        timings[str(batch)] = {
            "median_ms": {name: round(seconds * 1e3, 4) for name, seconds in medians.items()},
            "team_vs_leader_alone": medians["team_one_saved_model"] / medians["leader_alone"],
            "four_separate_vs_leader_alone": medians["four_separate_saved_models"] / medians["leader_alone"],
            "four_separate_vs_team": medians["four_separate_saved_models"] / medians["team_one_saved_model"],
        }
    return {"filters": list(setup["filters"]), "input_shape": list(x.shape[1:]),
            "parameters": {"team": int(team.count_params()), "leader": int(leader.count_params())},
            "by_batch_size": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="latency rounds at batch 1 (a tenth, at least 10, at 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args()
    load_before = load_average()
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    x = data.digits(seed=args.seed).splits["test"][0]
    out = pathlib.Path(tempfile.mkdtemp(prefix="export_team_serving."))
    setups = {name: measure(setup, upscale(x, setup["upscale"]), args.rounds, out / name)
              for name, setup in SETUPS.items()}
    results = {
        "benchmark": NAME,
        "leader": "keras_team.zoo.residual_cnn (untrained), uint8 input",
        "followers": "keras_team.zoo.mlp(10) on the leader's features, logits and probs (T=2)",
        "rounds": {"batch_1": args.rounds, "batch_64": max(10, args.rounds // 10)},
        "setups": setups,
        "target": f"team_vs_leader_alone <= {TARGET_RATIO}",
        "met": {name: {batch: t["team_vs_leader_alone"] <= TARGET_RATIO for batch, t in setup["by_batch_size"].items()}
                for name, setup in setups.items()},
        "machine": machine(load_before),
        "seconds": time.perf_counter() - start,
    }
    write_json(args.output, results)
    for name, setup in setups.items():
        for batch, figures in setup["by_batch_size"].items():
            ms = figures["median_ms"]
            print(f"{name} batch {batch:>3}: team {ms['team_one_saved_model']:.3f} ms, leader alone "
                  f"{ms['leader_alone']:.3f} ms, four separate {ms['four_separate_saved_models']:.3f} ms -> "
                  f"team/leader {figures['team_vs_leader_alone']:.2f}x, separate/team {figures['four_separate_vs_team']:.2f}x")
    print(f"met: {results['met']}  -> {args.output}")


if __name__ == "__main__":
    main()
