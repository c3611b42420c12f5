"""How fast a cached transfer can be with `model.fit`: Keras' own cost of fitting the trained part on ready features.

A cached stage (`keras_team.caching.fit_transfer`) runs the frozen part once,
then `model.fit`s the part above it on the cache. Whatever the cache does,
that `fit` stays: its trace, and every epoch's training call, validation pass
and logs. For each phase of a transfer (the head on the frozen body; the
top weighted layer and the head after `keras_team.unfreeze(top=1)`) this
script measures, in one process, on the same seeded data and model
(MobileNetV3Small, weights None, the photo patches at 64x64, a dense head,
the default cut, batch 32, a whole epoch per call, validation every epoch;
medians of interleaved rounds):

- ``full_forward``: `model.fit` of the transferred model on the images (the
  frozen part runs every step: the uncached way);
- ``cached``: `fit_transfer` (the frozen part once, then `fit` on its output);
- ``frozen_pass``: the frozen part of a new model run once over the
  training and validation images (`cache_features`: what any cache must
  compute, once);
- ``floor``: plain `model.fit` of the trained part on those features, served
  the lightest way Keras takes them (tensors in memory, one repeated
  shuffled stream, validation one batch); ``floor_without_validation``: the
  same with no validation pass.

``full_forward / (floor + frozen_pass)`` bounds what any cache can gain
while the trained part is fitted with `model.fit` validating every epoch;
``cached - floor - frozen_pass`` is what the package adds.

    python benchmarks/transfer_fit_floor.py /work/data/patches   # transfer_fit_floor.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import tensorflow as tf

import keras_team
from keras_team import caching, cuts, data, heads, zoo
from _common import PATCHES_TARGET, RESULTS, load_average, machine, write_json

def transferred(task: data.Task, unfreeze: int) -> keras_team.Transferred:
    """The same seeded model every call (Keras' state of earlier ones cleared); `unfreeze` top weighted layers trainable."""
    keras.utils.clear_session(free_memory=True)
    keras.utils.set_random_seed(0)
    leader = zoo.application("MobileNetV3Small", task.input_shape, 8, weights=None)
    model = keras_team.transfer(leader, keep=cuts.default_cut(leader), head=heads.dense(task.num_classes))
    return keras_team.unfreeze(model, top=unfreeze) if unfreeze else model


def seconds(fit) -> float:
    start = time.perf_counter()
    fit()
    return time.perf_counter() - start


def phase(task: data.Task, *, unfreeze: int, epochs: int, learning_rate: float, repeats: int) -> dict:
    """The timings of one phase (module docstring), medians of `repeats` rounds, with the bound and the package's share."""
    train, validation = task.dataset("train"), task.dataset("validation")
    examples = len(task.labels("train"))
    steps = -(-examples // task.batch_size)
    options = {"loss": caching.LOSS, "metrics": ["accuracy"], "steps_per_execution": steps}
    split = caching.split_frozen(transferred(task, unfreeze))
    features = {part: caching.cache_features(split.bottom, ds) for part, ds in (("train", train),
                                                                                 ("validation", validation))}
    features = {part: (inputs[caching.FEATURES], labels) for part, (inputs, labels) in features.items()}

    def full_forward() -> float:
        model = transferred(task, unfreeze)
        model.compile(keras.optimizers.Adam(learning_rate), **options)
        stream = train.unbatch().shuffle(examples, seed=0, reshuffle_each_iteration=True)
        stream = stream.batch(task.batch_size).repeat()
        return seconds(lambda: model.fit(stream, steps_per_epoch=steps, validation_data=validation, epochs=epochs,
                                         verbose=0))

    def cached() -> float:
        model = transferred(task, unfreeze)
        return seconds(lambda: caching.fit_transfer(model, train, validation, epochs=epochs, verbose=0,
                                                    optimizer=keras.optimizers.Adam(learning_rate)))

    def frozen_pass() -> float:
        bottom = caching.split_frozen(transferred(task, unfreeze)).bottom  # a new model, as a stage's
        return seconds(lambda: [caching.cache_features(bottom, ds) for ds in (train, validation)])

    def floor(validate: bool) -> float:
        top = caching.split_frozen(transferred(task, unfreeze)).top
        top.compile(keras.optimizers.Adam(learning_rate), **options)
        held = tf.data.Dataset.from_tensor_slices(features["train"]).cache()
        held = held.shuffle(examples, seed=0, reshuffle_each_iteration=True).batch(task.batch_size).repeat()
        checked = tf.data.Dataset.from_tensors(features["validation"]).cache() if validate else None
        return seconds(lambda: top.fit(held, steps_per_epoch=steps, validation_data=checked, epochs=epochs,
                                       verbose=0))

    ways = {"full_forward": full_forward, "cached": cached, "frozen_pass": frozen_pass,
            "floor": lambda: floor(True), "floor_without_validation": lambda: floor(False)}
    rounds = {name: [] for name in ways}
    for _ in range(repeats):  # interleaved: a slow spell of the machine falls on every way alike
        for name, way in ways.items():
            rounds[name].append(way())
    median = {name: statistics.median(times) for name, times in rounds.items()}
    return {"epochs": epochs, "boundary": split.boundary, "seconds": median, "rounds": rounds,
            "cached_speedup": median["full_forward"] / median["cached"],
            "most_speedup_with_fit": median["full_forward"] / (median["floor"] + median["frozen_pass"]),
            "package_seconds": median["cached"] - median["floor"] - median["frozen_pass"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="the photo patches folder (train/, test/)")
    parser.add_argument("--shots", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every timing (medians reported)")
    parser.add_argument("--output", default=str(RESULTS / "transfer_fit_floor.json"))
    args = parser.parse_args()
    load = load_average()
    task = data.from_folder(args.data, classes=list(PATCHES_TARGET), shots=args.shots, seed=0)
    result = {"shots": args.shots, "train_examples": len(task.labels("train")),
              "validation_examples": len(task.labels("validation")),
              # the run's epochs for each phase; the rates of transfer_cache.py's config (a dense head)
              "transfer": phase(task, unfreeze=0, epochs=100, learning_rate=0.003, repeats=args.repeats),
              "fine_tune": phase(task, unfreeze=1, epochs=10, learning_rate=0.0001, repeats=args.repeats),
              "machine": machine(load)}
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"wrote {write_json(args.output, result)}")


if __name__ == "__main__":
    main()
