"""The same KerasTuner search with the feature cache and without it.

With the cache (`keras_team.tuning.FeatureCache`, float16 on disk under the
tuner's directory) the frozen cut's features of the training and validation
data are computed once per cut and every trial and epoch with that cut trains
the head on them. Without it (`cache=False`) every epoch of every trial runs
the frozen kept layers again. Both searches are one `RandomSearch` with the
same oracle seed (so the same trials in the same order), the same leader,
data, epochs and head seed; the search space is the cut and the head's
learning rate, with nothing unfrozen (the frozen phase only, which is where
the cache applies). Timings are the whole `tuner.search` call, cache misses
included. Each search runs in a fresh Python process on the saved leader, so
both pay the same first-use costs (imports, first traces), as a user's
search does. The pair of searches is repeated (`--repeats`, each cached
search from an empty cache) and the median pair's figures are kept, with
every pair's speedup. The ranking of the cuts is compared by each cut's best validation
accuracy.

Each trial's seconds are split by part (`time_split`: KerasTuner's
`clear_session` and `gc.collect` before the build, the build (the copy of
the kept layers, the new head, compiling), the cache lookups (hashing, and on
a miss the features' pass through the frozen layers), Keras `fit` (the head
on the features, or the full model without the cache), the trial's
checkpoint write, and the rest: KerasTuner's bookkeeping and state files),
measured by wrapping the functions that do them. `fit_first_epochs`, a part
of `fit`, is the first epoch of each of the trial's fits (its train and
validation steps traced and their graphs optimised, then one epoch): what a
fit costs beyond its later epochs.

Leader: `keras_team.zoo.residual_cnn` (filters 32, 64, 128) on 32x32x3
images (the digits upscaled, see follower_cache.py), trained briefly on
digits 0-4 (untimed). Target: digits 5-9, train split grown by shifted
copies. Offline only.

With `--application MobileNetV3Small --data /work/data/patches`: that
`keras.applications` leader (weights None) on the 64x64 photo patches,
trained briefly on 8 photographs (untimed), and the hypermodel's default
space on the 9 others (every block cut, head, rates, `unfreeze` 0-2 with
its fine-tune rate): trials that fine-tune train the unfrozen blocks and the
head on the frozen part's output below them (the boundary cache) with the
cache, the full model without it.

Run from the repository root:

    python benchmarks/tuning_cache.py          # writes benchmarks/results/tuning_cache.json
    python benchmarks/tuning_cache.py --application MobileNetV3Small --data /work/data/patches
                                               # writes benchmarks/results/tuning_cache_mobilenetv3small.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer  # noqa: E402
from keras_tuner.src.engine import tuner as kt_tuner  # noqa: E402
from keras_team.tuning.whole_state import BestEpoch  # noqa: E402

from _common import (PATCHES_SOURCE, PATCHES_TARGET, RESULTS, load_average, machine, stopwatch,  # noqa: E402
                     time_calls, write_json)
from follower_cache import image_task  # noqa: E402
import keras_team  # noqa: E402
from keras_team import zoo  # noqa: E402
from keras_team.heads import LOSS  # noqa: E402
from keras_team.tuning import FeatureCache, TransferHyperModel, make_tuner, trial_table  # noqa: E402
from keras_team.tuning import search as search_module  # noqa: E402

NAME = "tuning_cache"
TARGET_SPEEDUP = 5.0
CUTS = ("stem_relu", "pool1", "block2_out", "block3_out")
# The photo patches' photographs: the leader's source task and the search's target (as transfer_cache.py).
HYPERPARAMETERS = ("cut", "head_layers", "head_units", "dropout", "learning_rate", "unfreeze",
                   "fine_tune_learning_rate")
# A trial's parts: the function whose wall seconds are the part's (none calls another of them).
PARTS = {
    "clear_session": (keras.backend, "clear_session"),
    "gc_collect": (kt_tuner.gc, "collect"),
    "build": (TransferHyperModel, "build"),
    "cache_lookups": (FeatureCache, "features_of"),
    "fit": (TensorFlowTrainer, "fit"),
    "checkpoint_write": (BestEpoch, "on_train_end"),
}
SECONDS: dict = collections.defaultdict(float)
SPLITS: list = []  # one {part: seconds} per trial, in the order they ran
FIRST_EPOCHS = "fit_first_epochs"


class _FirstEpoch(keras.callbacks.Callback):
    """Adds the seconds of a fit's first epoch (validation included) to `SECONDS[FIRST_EPOCHS]`."""

    done = False

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if not self.done:
            self.done = True
            SECONDS[FIRST_EPOCHS] += time.perf_counter() - self.start


def time_parts() -> None:
    """Wrap each part's function (its seconds add up in `SECONDS`) and each trial (its split goes to `SPLITS`)."""
    time_calls(PARTS, SECONDS)
    fit = TensorFlowTrainer.fit

    def fit_timing_first_epoch(self, *args, **kwargs):
        kwargs["callbacks"] = [_FirstEpoch(), *(kwargs.get("callbacks") or [])]
        return fit(self, *args, **kwargs)

    TensorFlowTrainer.fit = fit_timing_first_epoch
    run_trial = search_module._RecordsTrials.run_trial

    def timed_trial(self, *args, **kwargs):
        SECONDS.clear()
        start = time.perf_counter()
        try:
            return run_trial(self, *args, **kwargs)
        finally:
            split = {part: round(SECONDS[part], 3) for part in PARTS}
            split["other"] = round(time.perf_counter() - start - sum(SECONDS[part] for part in PARTS), 3)
            split[FIRST_EPOCHS] = round(SECONDS[FIRST_EPOCHS], 3)
            SPLITS.append(split)

    search_module._RecordsTrials.run_trial = timed_trial


def tasks(args) -> tuple:
    """The leader's source task and the search's target: upscaled digits, or the photo patches (`--data`)."""
    if args.application:
        return tuple(keras_team.data.from_folder(args.data, classes=list(classes), seed=args.seed,
                                                 batch_size=args.batch_size) for classes in (PATCHES_SOURCE, PATCHES_TARGET))
    return (image_task(range(5), seed=args.seed, batch_size=args.batch_size),
            image_task(range(5, 10), seed=args.seed, batch_size=args.batch_size, copies=args.copies))


def search(leader, target, cache, directory, args) -> tuple[float, float, list[dict]]:
    if args.application:  # the default space: every block, both phases
        hypermodel = TransferHyperModel(leader, target.num_classes, cache=cache, seed=args.seed)
    else:
        hypermodel = TransferHyperModel(leader, target.num_classes, cuts=list(CUTS), head_layers=[0], dropout=[0.0],
                                        learning_rate=[1e-3, 3e-3], max_unfreeze=0, cache=cache, seed=args.seed)
    tuner = make_tuner(hypermodel, max_trials=args.trials, directory=directory, seed=args.seed)
    SPLITS.clear()
    with stopwatch() as took:
        tuner.search(*target.splits["train"], validation_data=target.splits["validation"], epochs=args.epochs,
                     batch_size=args.batch_size, verbose=0)
    rows = trial_table(tuner)
    for row, split in zip(rows, SPLITS, strict=True):
        row["time_split"] = split
    return took["wall_seconds"], took["cpu_seconds"], rows


def mean_split(trials: list[dict], cache: str) -> dict | None:
    """Mean seconds per part over the trials whose features were `cache` ("hit", "miss" or "off")."""
    chosen = [t["time_split"] for t in trials if t["cache"] == cache]
    if not chosen:
        return None
    return {"trials": len(chosen), "seconds": round(sum(t["seconds"] for t in trials if t["cache"] == cache)
                                                  / len(chosen), 3),
            **{part: round(sum(s[part] for s in chosen) / len(chosen), 3) for part in chosen[0]}}


def cut_ranking(rows: list[dict]) -> list[str]:
    best = {}
    for row in rows:
        best[row["cut"]] = max(best.get(row["cut"], 0.0), row["score"])
    return sorted(best, key=lambda cut: -best[cut])


def one_search(name: str, leader_path: str, args) -> dict:
    """One timed search (`name`: "cached" or "uncached") on the saved leader; this process's only search."""
    time_parts()
    leader = keras_team.load_model(leader_path)
    target = tasks(args)[1]
    directory = pathlib.Path(leader_path).parent
    cache = FeatureCache(directory / "features") if name == "cached" else False
    wall, cpu, rows = search(leader, target, cache, directory / name, args)
    run = {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "cut_ranking": cut_ranking(rows),
           "trials": [{k: row[k] for k in (*HYPERPARAMETERS, "score", "seconds", "cache", "time_split")}
                      for row in rows]}
    run["mean_time_split"] = {cache: mean_split(run["trials"], cache) for cache in ("hit", "miss", "off")}
    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--copies", type=int, default=2, help="shifted copies added to the target train split")
    parser.add_argument("--filters", default="32,64,128")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--application", help="a keras.applications leader (weights None) on --data, e.g. "
                                              "MobileNetV3Small; the default space (both phases)")
    parser.add_argument("--data", help="with --application: the photo patches folder (train/, test/)")
    parser.add_argument("--leader-epochs", type=int, default=1, help="the leader's (untimed) training epochs")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of searches; the figures are the median pair's")
    parser.add_argument("--output", help=f"default: {RESULTS}/{NAME}.json (_<application> with --application)")
    parser.add_argument("--search", choices=["cached", "uncached"], help=argparse.SUPPRESS)  # a child process's run
    parser.add_argument("--leader", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: the pairs of searches to run, an int >= 1")
    if bool(args.application) != bool(args.data):
        parser.error("--application and --data go together (a keras.applications leader on the photo patches)")
    suffix = f"_{args.application.lower()}" if args.application else ""
    args.output = args.output or str(RESULTS / f"{NAME}{suffix}.json")
    if args.search:
        write_json(args.output, one_search(args.search, args.leader, args))
        return {}
    filters = tuple(int(f) for f in args.filters.split(","))
    load_before = load_average()

    keras.utils.set_random_seed(args.seed)
    source, target = tasks(args)
    if args.application:
        leader = zoo.application(args.application, target.input_shape, source.num_classes, weights=None)
        described = f"{args.application}(weights=None), {'x'.join(map(str, target.input_shape))}"
    else:
        leader = zoo.residual_cnn(target.input_shape, source.num_classes, filters=filters, name="leader")
        described = f"residual_cnn{filters}, 32x32x3"
    leader.compile("adam", LOSS)
    leader.fit(source.dataset("train", training=True), epochs=args.leader_epochs, verbose=0, shuffle=False)
    sizes = {"train": len(target.splits["train"][1]), "validation": len(target.splits["validation"][1])}
    print(f"target: {sizes['train']} train, {sizes['validation']} validation images of {target.input_shape}")

    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        leader_path = pathlib.Path(tmp) / "leader.keras"
        leader.save(leader_path)
        shared = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in
                  ("trials", "epochs", "copies", "batch_size", "seed", "application", "data") and v is not None]
        for repeat in range(args.repeats):
            pair = {}
            for name in ("cached", "uncached"):
                output = pathlib.Path(tmp) / f"{name}.json"
                subprocess.run([sys.executable, __file__, *shared, f"--search={name}", f"--leader={leader_path}",
                                f"--output={output}"], check=True)
                shutil.rmtree(pathlib.Path(tmp) / name)
                shutil.rmtree(pathlib.Path(tmp) / "features", ignore_errors=True)  # each cached search starts cold
                pair[name] = json.loads(output.read_text())
                print(f"pair {repeat + 1}, {name}: {pair[name]['wall_seconds']:.1f} s wall, "
                      f"{pair[name]['cpu_seconds']:.1f} s CPU; ranking {pair[name]['cut_ranking']}")
            pairs.append(pair)
    speedups = [pair["uncached"]["wall_seconds"] / pair["cached"]["wall_seconds"] for pair in pairs]
    runs = pairs[sorted(range(len(pairs)), key=speedups.__getitem__)[len(pairs) // 2]]
    speedup = statistics.median(speedups)
    same_trials = [[t[k] for k in HYPERPARAMETERS] for t in runs["cached"]["trials"]] == [
        [t[k] for k in HYPERPARAMETERS] for t in runs["uncached"]["trials"]]
    result = {
        "benchmark": NAME,
        "what": "one RandomSearch (same seed, trials, epochs) with the feature cache vs without",
        "leader": described, "data": sizes, "cuts": "the block view (default space)" if args.application else list(CUTS),
        "trials": args.trials, "epochs": args.epochs,
        "speedup_wall": round(speedup, 2),
        "speedup_wall_each_pair": [round(value, 2) for value in speedups],
        "speedup_cpu": round(runs["uncached"]["cpu_seconds"] / runs["cached"]["cpu_seconds"], 2),
        "target_speedup": TARGET_SPEEDUP, "meets_target": speedup >= TARGET_SPEEDUP,
        "same_trials": same_trials,
        "fine_tune_trials": sum(1 for t in runs["cached"]["trials"] if t["unfreeze"]),
        "same_cut_ranking": runs["cached"]["cut_ranking"] == runs["uncached"]["cut_ranking"],
        "runs": runs,
        "machine": machine(load_before),
    }
    write_json(args.output, result)
    for name, run in runs.items():
        for cache, split in run["mean_time_split"].items():
            if split:
                print(f"{name}, per trial ({cache}): " + ", ".join(f"{k} {v}" for k, v in split.items()))
    print(f"speedup {speedup:.2f}x wall, median of {result['speedup_wall_each_pair']} "
          f"(target >= {TARGET_SPEEDUP}x); same ranking: {result['same_cut_ranking']}")
    return result


if __name__ == "__main__":
    main()
