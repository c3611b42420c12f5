"""A search over every cut vs a search over the top-k cuts the cut advisor ranks best.

For each seed: a leader (`residual_cnn`, the default config's) is trained on
digits 0-4; the target is digits 5-9 with `--shots` labelled images per class
and validation capped per class. Two `RandomSearch`es with the same oracle
seed, trials, epochs and head space choose on the same validation images:

- all cuts: `TransferHyperModel` over the candidate cuts: `--cuts all`
  (default) every cut point that keeps a weighted layer (nine on this
  leader, several of them one place: the space before the block view), or
  `--cuts blocks` the block view (three);
- top-k: the same candidates with `top_k_cuts=k`, the cuts ranked by
  `keras_team.rank_cuts` on the training and validation images (never the
  test split); the ranking's seconds count in its wall time.

Reported per search: wall seconds (the hypermodel, ranking included, and the
search), the best trial's validation accuracy, the best-so-far validation
accuracy and seconds after each trial, the seconds each took to first reach
the all-cuts search's final best validation accuracy, and (reported only,
never chosen on) the test accuracy of the model KerasTuner kept for the best
trial. Offline only.

Run from the repository root:

    python benchmarks/tuning_pruning.py        # writes benchmarks/results/tuning_pruning.json
    python benchmarks/tuning_pruning.py --seeds 0 --trials 4 --epochs 10 --output /tmp/pruning.json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import keras_team  # noqa: E402
from _common import RESULTS, load_average, machine, write_json  # noqa: E402
from keras_team.tuning import TransferHyperModel, cap_per_class, make_tuner, trial_table  # noqa: E402
from tuning_quality import leader_for  # noqa: E402

NAME = "tuning_pruning"


def candidates(leader, view: str) -> list[str] | None:
    """The cuts a search may choose: every cut point keeping a weighted layer (but the output), or the block view."""
    if view == "blocks":
        return None
    return [c.name for c in keras_team.cut_points(leader)[:-1] if c.depth >= 1]


def search(leader, target, validation, directory, args, **pruning) -> dict:
    """One search; its wall seconds, best validation and test accuracy, and its best-so-far curve."""
    start = time.perf_counter()
    hypermodel = TransferHyperModel(leader, target.num_classes, cuts=candidates(leader, args.cuts),
                                    seed=args.seed_offset, run_eagerly=True, **pruning)
    tuner = make_tuner(hypermodel, max_trials=args.trials, directory=directory, seed=args.seed_offset,
                       progress=False)
    ranked = time.perf_counter() - start
    tuner.search(*target.splits["train"], validation_data=validation, epochs=args.epochs, verbose=0)
    wall = time.perf_counter() - start
    rows = trial_table(tuner)
    best_so_far, seconds, curve = 0.0, ranked, []
    for row in rows:
        seconds += row["seconds"] or 0.0
        best_so_far = max(best_so_far, row["score"] or 0.0)
        curve.append({"trial": row["trial"], "cut": row["cut"], "score": row["score"],
                      "best_so_far": best_so_far, "seconds": round(seconds, 2)})
    model = tuner.get_best_models(1)[0]
    x_test, y_test = target.splits["test"]
    return {
        "cuts": [c.name for c in hypermodel.cuts],
        "ranking": [{"cut": s.cut.name, "score": round(s.score, 4)} for s in hypermodel.cut_ranking or []],
        "ranking_seconds": round(ranked, 2) if hypermodel.cut_ranking else None,
        "wall_seconds": round(wall, 2),
        "val_accuracy": max(point["best_so_far"] for point in curve),
        "test_accuracy": float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)),
        "curve": curve,
    }


def seconds_to_reach(curve: list[dict], score: float) -> float | None:
    """Seconds until the best-so-far validation accuracy first reached `score` (None: never)."""
    return next((point["seconds"] for point in curve if point["best_so_far"] >= score - 1e-9), None)


def spread(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": round(statistics.mean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, "n": len(values)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--cuts", choices=("all", "blocks"), default="all", help="the candidate cuts")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8, help="trials per search, each side")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial, each side")
    parser.add_argument("--validation-per-class", type=int, default=10)
    parser.add_argument("--leader-epochs", type=int, default=10)
    parser.add_argument("--seed-offset", type=int, default=0, help="the oracles' and heads' seed")
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    load_before = load_average()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            leader = leader_for(seed, args.leader_epochs)
            _, target = keras_team.data.digits_tasks(shots=args.shots, seed=seed)
            validation = cap_per_class(*target.splits["validation"], args.validation_per_class, seed=seed)
            seen = tuple(np.concatenate(pair) for pair in zip(target.splits["train"], validation))
            root = pathlib.Path(tmp) / f"s{seed}"
            every = search(leader, target, validation, root / "all", args)
            top = search(leader, target, validation, root / "top", args, top_k_cuts=args.top_k, rank_data=seen)
            for name, result in (("all cuts", every), (f"top {args.top_k}", top)):
                result["seconds_to_all_cuts_best"] = seconds_to_reach(result["curve"], every["val_accuracy"])
                print(f"seed {seed} {name}: {len(result['cuts'])} cuts, {result['wall_seconds']:.1f} s, "
                      f"val {result['val_accuracy']:.3f}, test {result['test_accuracy']:.3f}, "
                      f"reached the all-cuts best after {result['seconds_to_all_cuts_best']} s")
            runs.append({"seed": seed, "all_cuts": every, "top_k": top})
    summary = {side: {key: spread([run[side][key] for run in runs])
                      for key in ("wall_seconds", "val_accuracy", "test_accuracy", "seconds_to_all_cuts_best")}
               for side in ("all_cuts", "top_k")}
    result = {
        "benchmark": NAME,
        "what": "RandomSearch over every cut vs over the top-k cuts by rank_cuts (train+validation), same budget",
        "leader": "residual_cnn, digits 0-4", "target": f"digits 5-9, {args.shots} shots",
        "candidate_cuts": args.cuts, "top_k": args.top_k, "trials": args.trials, "epochs": args.epochs,
        "validation_per_class": args.validation_per_class, "summary": summary, "runs": runs,
        "machine": machine(load_before),
    }
    path = write_json(args.output, result)
    for side, figures in summary.items():
        print(f"{side}: " + ", ".join(f"{k} {v['mean']} ± {v['std']}" for k, v in figures.items()))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
