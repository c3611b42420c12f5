"""Few-shot quality of a tuned transfer vs a scratch baseline tuned with the same budget.

For each shots value and seed: a leader (`residual_cnn`, the default
config's) is trained on digits 0-4; the target is digits 5-9 with `shots`
labelled images per class. Both sides get one `RandomSearch` of the same
number of trials and epochs per trial, choose on the same validation images
(capped per class) and are scored once, on the test split, with the model
KerasTuner kept for the best trial:

- tuned transfer: `TransferHyperModel` over the leader's cuts, the head,
  learning rates and the unfreeze depth (the leader's weights, frozen, then
  fine-tuned at the lower rate);
- scratch: the same architecture up to the same choice of cut plus the same
  head choices, freshly initialised and all trainable, searched over its own
  cut, head and learning rate (batch norm trains normally: no frozen part).

Run from the repository root:

    python benchmarks/tuning_quality.py        # writes benchmarks/results/tuning_quality.json
    python benchmarks/tuning_quality.py --shots 1,5 --seeds 0,1,2,3,4 --trials 4 --epochs 30
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402
import numpy as np  # noqa: E402

import keras_team  # noqa: E402
from _common import RESULTS, load_average, machine, write_json  # noqa: E402
from keras_team import heads, zoo  # noqa: E402
from keras_team.heads import LOSS  # noqa: E402
from keras_team.tuning import TransferHyperModel, cap_per_class, make_tuner  # noqa: E402

NAME = "tuning_quality"
TARGET_GAIN = {1: 5.0, 5: 3.0}


class ScratchHyperModel(TransferHyperModel):
    """The same space on a freshly initialised copy of the leader's architecture, all of it trained."""

    def __init__(self, leader, num_classes, **kwargs):
        super().__init__(leader, num_classes, max_unfreeze=0, cache=False, **kwargs)
        # New weights, same architecture: drawn once, so every build starts from the same ones
        # (KerasTuner builds more than once per trial; the global seed is not reset here).
        self.fresh_weights = keras.models.clone_model(leader).get_weights()

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        chosen = self.settings(hp)
        fresh = keras.models.clone_model(self.leader)
        fresh.set_weights(self.fresh_weights)
        kept = keras_team.body(fresh, chosen["cut"], share=True)
        head = heads.dense(self.num_classes, hidden=(chosen["head_units"],) * chosen["head_layers"],
                           dropout=chosen["dropout"], seed=self.seed)
        model = keras.Model(kept.inputs, head(kept.outputs[0]), name=f"scratch_{chosen['cut']}")
        model.compile(keras.optimizers.Adam(chosen["learning_rate"]), LOSS, metrics=self.metrics,
                      run_eagerly=self.run_eagerly)
        return model


def leader_for(seed: int, epochs: int) -> keras.Model:
    source, _ = keras_team.data.digits_tasks(shots=1, seed=seed)
    keras.utils.set_random_seed(seed)
    leader = zoo.residual_cnn(source.input_shape, source.num_classes, name="leader")
    leader.compile(keras.optimizers.Adam(1e-3), LOSS)
    leader.fit(source.dataset("train", training=True), epochs=epochs, verbose=0, shuffle=False)
    return leader


def tuned(hypermodel, target, validation, directory, args) -> dict:
    tuner = make_tuner(hypermodel, max_trials=args.trials, directory=directory, seed=args.seed_offset,
                       progress=False)
    start = time.perf_counter()
    tuner.search(*target.splits["train"], validation_data=validation, epochs=args.epochs, verbose=0)
    best_trial = tuner.oracle.get_best_trials(1)[0]
    model = tuner.get_best_models(1)[0]
    x_test, y_test = target.splits["test"]
    test = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))
    return {"test_accuracy": test, "val_accuracy": float(best_trial.score),
            "chosen": hypermodel.chosen(best_trial.hyperparameters.values),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--trials", type=int, default=4, help="trials per search, each side")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per trial, each side")
    parser.add_argument("--validation-per-class", type=int, default=10)
    parser.add_argument("--leader-epochs", type=int, default=10)
    parser.add_argument("--seed-offset", type=int, default=0, help="the oracles' seed")
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    shots_list = [int(s) for s in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    load_before = load_average()
    space = dict(run_eagerly=True)  # one or two batches per epoch: tracing would cost more than training

    per_seed = {shots: [] for shots in shots_list}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            leader = leader_for(seed, args.leader_epochs)
            for shots in shots_list:
                _, target = keras_team.data.digits_tasks(shots=shots, seed=seed)
                validation = cap_per_class(*target.splits["validation"], args.validation_per_class, seed=seed)
                root = pathlib.Path(tmp) / f"s{seed}_k{shots}"
                team = tuned(TransferHyperModel(leader, target.num_classes, seed=seed, **space),
                             target, validation, root / "transfer", args)
                keras.utils.set_random_seed(seed)  # the scratch side's initial weights, drawn once
                scratch = tuned(ScratchHyperModel(leader, target.num_classes, seed=seed, **space),
                                target, validation, root / "scratch", args)
                gain = 100 * (team["test_accuracy"] - scratch["test_accuracy"])
                per_seed[shots].append({"seed": seed, "transfer": team, "scratch": scratch, "gain_points": round(gain, 2),
                                        "train_examples": len(target.splits["train"][1]),
                                        "validation_examples": len(validation[1]),
                                        "test_examples": len(target.splits["test"][1])})
                print(f"shots {shots} seed {seed}: transfer {team['test_accuracy']:.3f} (cut {team['chosen']['cut']}, "
                      f"unfreeze {team['chosen']['unfreeze']}) vs scratch {scratch['test_accuracy']:.3f} "
                      f"(cut {scratch['chosen']['cut']}): {gain:+.1f} points", flush=True)

    summary = {}
    for shots, rows in per_seed.items():
        gains = np.array([r["gain_points"] for r in rows])
        team = np.array([r["transfer"]["test_accuracy"] for r in rows])
        scratch = np.array([r["scratch"]["test_accuracy"] for r in rows])
        summary[str(shots)] = {
            "transfer_test_accuracy": f"{team.mean():.3f} ± {team.std(ddof=1) if len(rows) > 1 else 0:.3f}",
            "scratch_test_accuracy": f"{scratch.mean():.3f} ± {scratch.std(ddof=1) if len(rows) > 1 else 0:.3f}",
            "gain_points_mean": round(float(gains.mean()), 2),
            "gain_points_std": round(float(gains.std(ddof=1)) if len(rows) > 1 else 0.0, 2),
            "target_gain_points": TARGET_GAIN.get(shots),
            "meets_target": bool(gains.mean() >= TARGET_GAIN.get(shots, 0)),
            "chosen_cuts": [r["transfer"]["chosen"]["cut"] for r in rows],
            "scratch_cuts": [r["scratch"]["chosen"]["cut"] for r in rows],
        }
        print(f"shots {shots}: gain {gains.mean():+.1f} ± {summary[str(shots)]['gain_points_std']:.1f} points "
              f"(target {TARGET_GAIN.get(shots)}); transfer {summary[str(shots)]['transfer_test_accuracy']}, "
              f"scratch {summary[str(shots)]['scratch_test_accuracy']}")
    result = {
        "benchmark": NAME,
        "what": "tuned transfer (validation only) vs scratch baseline tuned with the same budget, test accuracy",
        "budget": {"trials": args.trials, "epochs_per_trial": args.epochs, "tuner": "random",
                   "validation_per_class": args.validation_per_class, "leader_epochs": args.leader_epochs},
        "summary": summary, "per_seed": {str(k): v for k, v in per_seed.items()},
        "machine": machine(load_before),
    }
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
