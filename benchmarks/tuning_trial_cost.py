"""Where the time of one cached trial goes.

A `make_tuner` RandomSearch whose every trial uses one cut (`block2_out` of
`keras_team.zoo.residual_cnn` (filters 32, 64, 128) on 32x32x3 digits, the
leader and data of tuning_cache.py) and the head phase only, 15 epochs: the
first trial computes the features (a miss, untimed), the next `--trials`
read them back (hits) and are timed, whole and by part. The parts are
measured by wrapping the functions that do them: KerasTuner's
`clear_session` and `gc.collect` before each build, the copy of the kept
layers, the cache lookups (hashing weights and data, reading the `.npy`),
the head's data pipeline, the head phase (Keras `fit` of the head on the
features: tracing, steps, validation), the best-epoch snapshots and the
one checkpoint write; the head phase is also split into its first epoch
(after KerasTuner's per-trial `clear_session`, which empties TensorFlow's
kernel cache) and the later ones. The same search is then run the way it was before
issue 15's cuts (in the same process, `before`): KerasTuner's per-trial
`gc.collect` over the whole heap (no `gc.freeze`), the head fed numpy arrays
(Keras' eager per-epoch shuffle) and a checkpoint written at every better
epoch. Offline only.

Run from the repository root:

    python benchmarks/tuning_trial_cost.py     # writes benchmarks/results/tuning_trial_cost.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_tuner.src.engine import tuner as kt_tuner  # noqa: E402
from keras_team.tuning.whole_state import BestEpoch  # noqa: E402

from _common import RESULTS, load_average, machine, time_calls, write_json  # noqa: E402
from follower_cache import image_task  # noqa: E402
import keras_team  # noqa: E402
from keras_team import zoo  # noqa: E402
from keras_team.heads import LOSS  # noqa: E402
from keras_team.tuning import FeatureCache, TransferHyperModel, make_tuner  # noqa: E402
from keras_team.tuning import hypermodel as hypermodel_module  # noqa: E402

NAME = "tuning_trial_cost"
PARTS = {
    "KerasTuner clear_session before the build": (keras.backend, "clear_session"),
    "KerasTuner gc.collect before the build": (kt_tuner.gc, "collect"),
    "copy of the kept layers": (hypermodel_module, "transfer"),
    "cache lookups (hash weights and data, read .npy)": (FeatureCache, "features_of"),
    "head data pipeline": (hypermodel_module, "_batches"),
    "head phase (Keras fit on the features)": (TransferHyperModel, "_fit_head_on_features"),
    "best-epoch snapshots (in memory; before: written)": (BestEpoch, "_save_model"),
    "checkpoint write (once per trial)": (BestEpoch, "on_train_end"),
}


def _head_on_arrays(self, store, model, learning_rate, x, y, validation_data, initial_epoch, split, common):
    """The head phase as before: float32 arrays into Keras' `fit`."""
    features, val_features = store.features(model.body, x), store.features(model.body, validation_data[0])
    self.last_cache = "hit"
    inputs = keras.Input(features.shape[1:], name="features")
    head_model = keras.Model(inputs, model.head(inputs), name=f"{model.name}_head")
    head_model.compile(keras.optimizers.Adam(learning_rate), LOSS, metrics=self.metrics)
    return head_model.fit(np.asarray(features, "float32"), y,
                          validation_data=(np.asarray(val_features, "float32"), validation_data[1]),
                          epochs=split, initial_epoch=initial_epoch, **common)


def _write_every_better_epoch(self):
    self.best_weights = self.model.get_weights()
    BestEpoch.on_train_end(self)


@contextlib.contextmanager
def before_issue_15():
    """The three per-trial costs this issue cut, put back."""
    saved = [(gc, "freeze", gc.freeze), (TransferHyperModel, "_fit_head_on_features",
                                          TransferHyperModel._fit_head_on_features),
             (BestEpoch, "_save_model", BestEpoch._save_model)]
    gc.freeze = lambda: None
    TransferHyperModel._fit_head_on_features = _head_on_arrays
    BestEpoch._save_model = _write_every_better_epoch
    time_calls({part: PARTS[part] for part in ("head phase (Keras fit on the features)",
                                               "best-epoch snapshots (in memory; before: written)")}, SECONDS)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


class EpochSeconds(keras.callbacks.Callback):
    """Wall seconds of each epoch, one list per trial in `trials` (KerasTuner copies callbacks per trial: shared)."""

    trials: list[list[float]] = []

    def on_train_begin(self, logs=None):
        self.trials.append([])

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.trials[-1].append(time.perf_counter() - self.started)

    def split(self) -> dict:
        """Mean seconds of a trial's first epoch and of each later one."""
        return {"first epoch (KerasTuner's clear_session emptied TensorFlow's kernel cache)":
                round(statistics.mean(epochs[0] for epochs in self.trials), 3),
                "each later epoch": round(statistics.mean(e for epochs in self.trials for e in epochs[1:]), 3)}


def timed_search(leader, target, args) -> tuple[float, dict, dict]:
    """Seconds per cached trial of a search on one cut, whole and by part, and its head phase by epoch."""
    hypermodel = TransferHyperModel(leader, target.num_classes, cuts=["block2_out"], head_layers=[0], dropout=[0.0],
                                    learning_rate=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1], max_unfreeze=0)
    tuner = make_tuner(hypermodel, max_trials=1, directory=tempfile.mkdtemp(prefix=f"{NAME}-"), progress=False)
    epochs = EpochSeconds()
    fit = dict(validation_data=target.splits["validation"], epochs=args.epochs, batch_size=32, verbose=0,
               callbacks=[epochs])
    tuner.search(*target.splits["train"], **fit)  # computes the features: the miss, untimed
    SECONDS.clear()
    epochs.trials.clear()
    tuner.oracle.max_trials = 1 + args.trials
    start = time.perf_counter()
    tuner.search(*target.splits["train"], **fit)
    per_trial = (time.perf_counter() - start) / args.trials
    return per_trial, {part: round(SECONDS[part] / args.trials, 3) for part in PARTS}, epochs.split()


SECONDS: dict = collections.defaultdict(float)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=4, help="timed cached trials, each way")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    load_before = load_average()
    keras.utils.set_random_seed(0)
    source = image_task(range(5), seed=0, batch_size=32)
    target = image_task(range(5, 10), seed=0, batch_size=32, copies=2)
    leader = zoo.residual_cnn(target.input_shape, source.num_classes, filters=(32, 64, 128), name="leader")
    leader.compile("adam", LOSS)
    leader.fit(source.dataset("train", training=True), epochs=1, verbose=0, shuffle=False)
    features = "x".join(str(d) for d in keras_team.body(leader, "block2_out").output.shape[1:])
    time_calls(PARTS, SECONDS)
    per_trial, parts, head_epochs = timed_search(leader, target, args)
    with before_issue_15():
        before_per_trial, before_parts, _ = timed_search(leader, target, args)
    result = {
        "what": "one cached trial (features read back) of a make_tuner search, by part",
        "leader": f"residual_cnn(32, 64, 128), 32x32x3, cut block2_out ({features} features)",
        "data": {"train": len(target.splits["train"][1]), "validation": len(target.splits["validation"][1])},
        "epochs": args.epochs, "trials_timed": args.trials,
        "seconds_per_trial": round(per_trial, 3), "seconds_per_trial_by_part": parts,
        "head_phase_seconds_by_epoch": head_epochs,
        "seconds_per_trial_elsewhere": round(per_trial - sum(parts.values()), 3),
        "before": {"seconds_per_trial": round(before_per_trial, 3), "seconds_per_trial_by_part": before_parts},
        "speedup": round(before_per_trial / per_trial, 2),
        "machine": machine(load_before),
    }
    path = write_json(args.output, result)
    print(f"{per_trial:.2f} s per cached trial ({args.epochs} epochs), {before_per_trial:.2f} s before:")
    for part, value in parts.items():
        print(f"  {value:6.2f} s  (before {before_parts[part]:6.2f} s)  {part}")
    print("head phase: " + ", ".join(f"{part} {value:.3f} s" for part, value in head_epochs.items()))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
