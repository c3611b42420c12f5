"""How well the cut advisor's score predicts what a trained head reaches at each cut.

For each seed: trains the default leader (the small ResNet, 20 epochs on
digits 0-4), scores every cut with `keras_team.rank_cuts` on the target's
training + validation examples (digits 5-9, `--shots` per class), then
trains the default head (dense, 64 hidden units, dropout 0.2; 100 epochs at
3e-3, as `keras-team run` does) on the frozen cut and records its validation
accuracy. Reports per seed the Spearman rank correlation between score and
validation accuracy over the cuts, the seconds the scoring took against the
seconds the heads took, and whether the advisor's top cut is among the three
best trained ones. (The input and the logits are cuts too: they stay in.)

Run from the repository root:

    python benchmarks/cut_advisor.py                 # seeds 0 1 2, 5 shots
    python benchmarks/cut_advisor.py --shots 1 --output benchmarks/results/cut_advisor_1shot.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import keras_team  # noqa: E402
from _common import RESULTS, load_average, machine, write_json  # noqa: E402
from keras_team import data, heads, zoo  # noqa: E402

NAME = "cut_advisor"


def one_seed(seed: int, shots: int) -> dict:
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    source, target = data.digits_tasks(shots=shots, seed=seed)
    leader = zoo.residual_cnn(source.input_shape, source.num_classes)
    leader.compile(keras.optimizers.Adam(1e-3), heads.LOSS)
    leader.fit(source.dataset("train", training=True), epochs=20, verbose=0)
    (x, y), (xv, yv) = target.splits["train"], target.splits["validation"]
    start = time.perf_counter()
    ranking = keras_team.rank_cuts(leader, np.concatenate([x, xv]), np.concatenate([y, yv]))
    scoring_seconds = time.perf_counter() - start
    cuts, start = [], time.perf_counter()
    for scored in ranking:
        keras.utils.set_random_seed(seed)
        model = keras_team.transfer(leader, scored.cut, heads.dense(target.num_classes, hidden=(64,), dropout=0.2))
        model.compile(keras.optimizers.Adam(3e-3), heads.LOSS, metrics=["accuracy"])
        history = model.fit(x, y, validation_data=(xv, yv), epochs=100, batch_size=32, verbose=0)
        cuts.append({"cut": scored.cut.name, "depth": scored.cut.depth, "score": round(scored.score, 4),
                     "score_seconds": round(scored.seconds, 3),
                     "val_accuracy": round(float(history.history["val_accuracy"][-1]), 4)})
    training_seconds = time.perf_counter() - start
    trained_order = sorted(cuts, key=lambda c: -c["val_accuracy"])
    return {
        "seed": seed,
        "cuts": cuts,
        "spearman": round(float(spearmanr([c["score"] for c in cuts], [c["val_accuracy"] for c in cuts]).statistic), 3),
        "advisor_top": cuts[0]["cut"],
        "advisor_top_in_trained_top3": cuts[0]["cut"] in [c["cut"] for c in trained_order[:3]],
        "trained_best": trained_order[0]["cut"],
        "scoring_seconds": round(scoring_seconds, 2),
        "head_training_seconds": round(training_seconds, 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default %(default)s)")
    parser.add_argument("--shots", type=int, default=5, help="labelled target examples per class (default %(default)s)")
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    load_before = load_average()
    runs = []
    for seed in seeds:
        runs.append(one_seed(seed, args.shots))
        last = runs[-1]
        print(f"seed {seed}: spearman {last['spearman']:+.2f}, advisor's top {last['advisor_top']} "
              f"(trained best {last['trained_best']}), scoring {last['scoring_seconds']:.1f} s vs heads "
              f"{last['head_training_seconds']:.0f} s", flush=True)
    spearman = [r["spearman"] for r in runs]
    result = {
        "benchmark": NAME,
        "what": f"rank correlation of keras_team.rank_cuts' score with a trained head's validation accuracy, "
                f"every cut of the default leader, digits 5-9 at {args.shots} shots",
        "seeds": seeds,
        "per_seed": runs,
        "spearman": {"mean": round(float(np.mean(spearman)), 3),
                     "std": round(float(np.std(spearman, ddof=1)) if len(spearman) > 1 else 0.0, 3)},
        "machine": machine(load_before),
    }
    output = write_json(args.output, result)
    print(f"{NAME}: spearman {result['spearman']['mean']:+.2f} +- {result['spearman']['std']:.2f}; wrote {output}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
