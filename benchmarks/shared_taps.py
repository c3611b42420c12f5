"""The followers stage with one tap cache shared by the followers vs one cache per follower.

The default team's three followers (the mlp, the probe on shifted copies, the
pooled probe) all read the leader's ``features`` tap. The slower way, the
recipe's before this benchmark, cached the taps once per follower, so the
frozen leader ran over the training and validation splits three times; the
shared way (`keras_team.caching.cache_taps` of several followers, what the
recipe does now) runs it once over each split for all of them. The probe's
shifted copies are its own in both ways.

Both ways fit the same followers from the same initial weights with the same
seeds and the library defaults (`load_config()`'s followers, epochs, learning
rates, views), in the same process; the followers' final weights are compared
(bit-equal expected: the taps are the same numbers). Timings are wall seconds
of the whole followers stage, caching and fits.

Leader: a `keras.applications` network with random weights (the speed of its
forward pass does not depend on them; nothing is downloaded), cut at its
default (middle) block as the recipe cuts it, on the photo patches (64x64
RGB; `transfer_gain.py --data patches` generates them), target at `--shots`
shots per class with the 60 validation patches per class.

`--streamed` times the stage as the recipe runs it for a streamed task
(`data.stream`): every cache on disk, memory-mapped (the shared one, or the
mlp's own; the probes' own caches stay in memory, as `probe_follower` keeps
them) and the probe without shifted copies.

Run from the repository root:

    python benchmarks/shared_taps.py          # writes benchmarks/results/shared_taps.json
    python benchmarks/shared_taps.py --streamed   # writes benchmarks/results/shared_taps_streamed.json
    python benchmarks/shared_taps.py --applications EfficientNetV2B0 --shots 5
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from _common import RESULTS, load_average, machine, write_json  # noqa: E402
from keras_team import probe  # noqa: E402
from keras_team.app import recipe  # noqa: E402
from keras_team.app.config import load_config  # noqa: E402
from keras_team.caching import cache_taps, fit_follower  # noqa: E402
from transfer_gain import data_overrides  # noqa: E402

NAME = "shared_taps"


def followers_stage(config, team, target, *, shared: bool, disk: str | None = None) -> float:
    """Train every follower of `team` as the recipe's followers stage does; its wall seconds.

    `disk`: a folder for the caches, as for a streamed task (the probes then take no shifted copies).
    """
    start = time.perf_counter()
    train, validation = target.dataset("train"), target.dataset("validation")
    if shared:
        names = [f.name for f in config.followers]
        train, validation = (cache_taps(team, names, data, directory=disk and os.path.join(disk, "shared", split),
                                        verbose=0) for split, data in (("train", train), ("validation", validation)))
    for f in config.followers:
        keras.utils.set_random_seed(config.seed)
        if f.kind == "linear_probe":
            copies = f.views if f.augment and disk is None else 0
            augmented = dataclasses.replace(target, augment=f.augment).dataset("train", training=True) if copies else None
            probe.probe_follower(team, f.name, train, validation, augmented=augmented, copies=copies,
                                 l2=f.l2, epochs=f.epochs, learning_rate=f.learning_rate,
                                 batch_size=target.batch_size, seed=config.seed)
        else:
            fit_follower(team, f.name, train, validation, epochs=f.epochs,
                         optimizer=keras.optimizers.Adam(f.learning_rate), batch_size=target.batch_size,
                         seed=config.seed, verbose=0,
                         directory=os.path.join(disk, f.name) if disk and not shared else None)
    return time.perf_counter() - start


def one_leader(application: str, shots: int, streamed: bool = False) -> dict:
    """Both ways on `application` (random weights) at `shots` shots: seconds, speedup, whether the weights agree."""
    config = load_config(overrides=[*data_overrides("patches"), f"leader.application={application}",
                                    "leader.weights=null", f"data.target.shots={shots}"])
    source, target = recipe.load_tasks(config)
    keras.utils.set_random_seed(config.seed)
    leader = recipe.new_leader(config, 0, source)
    student = recipe.build_student(config, 0, leader, target)
    team = recipe.build_team(config, {"leader": student}, target)
    graphs = [team.follower_graphs[f.name] for f in config.followers]
    initial = [graph.get_weights() for graph in graphs]
    seconds, weights = {}, {}
    for way, shared in (("per_follower", False), ("shared", True)):
        for graph, start in zip(graphs, initial):
            graph.set_weights(start)
        with tempfile.TemporaryDirectory() as folder:
            disk = folder if streamed else None
            seconds[way] = round(followers_stage(config, team, target, shared=shared, disk=disk), 2)
        weights[way] = [w for graph in graphs for w in graph.get_weights()]
    result = {
        "leader": f"{application} (random weights), cut at {student.cut.name}",
        "followers": [f.name for f in config.followers],
        "train_examples": len(target.labels("train")),
        "validation_examples": len(target.labels("validation")),
        "seconds": seconds,
        "speedup": round(seconds["per_follower"] / seconds["shared"], 2),
        "same_weights": all(np.array_equal(a, b) for a, b in zip(weights["per_follower"], weights["shared"])),
    }
    print(f"{application}: per follower {seconds['per_follower']:.1f} s, shared {seconds['shared']:.1f} s, "
          f"{result['speedup']:.2f}x, same weights: {result['same_weights']}", flush=True)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--applications", default="MobileNetV3Small,ResNet50V2",
                        help="keras.applications leaders, comma-separated (default %(default)s)")
    parser.add_argument("--shots", type=int, default=20, help="training patches per target class (default %(default)s)")
    parser.add_argument("--streamed", action="store_true", help="the caches on disk, as for a streamed task")
    parser.add_argument("--output", help=f"the JSON written (default {RESULTS}/{NAME}[_streamed].json)")
    args = parser.parse_args(argv)
    output = args.output or str(RESULTS / f"{NAME}{'_streamed' if args.streamed else ''}.json")
    load_before = load_average()
    result = {
        "benchmark": NAME,
        "what": "the default followers stage, wall seconds: taps cached once per follower vs once for all"
                + (" (on disk, as for a streamed task; the probe without shifted copies)" if args.streamed else ""),
        "shots": args.shots,
        "streamed": args.streamed,
        "runs": [one_leader(application, args.shots, args.streamed) for application in args.applications.split(",")],
        "machine": machine(load_before),
    }
    print(f"wrote {write_json(output, result)}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
