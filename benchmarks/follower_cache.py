"""Follower training on cached taps vs recomputing the frozen leader every batch.

The cached way is `keras_team.caching.fit_follower`: the frozen leader runs
once over the training data and the follower's own graph is fitted on the
stored taps. The slower way is the write-up's: one model made of the frozen
leader's tap model followed by the follower graph, fitted on raw images, so
the leader runs again for every batch of every epoch.

Both ways use the same Team (so the same follower architecture), the same
data, the same initial follower weights (copied before the first fit and
restored before each fit), the same seed, batch size and optimizer, and no
validation data. Timings include the cached way's one caching pass. The
cached way takes seconds, so a burst of other load skews it more: it runs
three times (`--cached-repeats`) from the same start, the leader's predict
function traced afresh each time, and the median run counts; the slow way
runs once (its epochs already average over minutes).

Leader: `keras_team.zoo.residual_cnn` (filters 64, 128, 256) on 32x32x3 images
(the bundled 8x8 digits upscaled 4x and repeated over 3 channels), trained
briefly on digits 0-4 and transferred, cut at `avg_pool` and frozen, as the
recipe does. The follower is `keras_team.zoo.mlp` on the features
tap, fitted on digits 5-9 (train split grown by randomly shifted copies to a
few thousand examples; the test split is left as it is). Offline only.

Run from the repository root:

    python benchmarks/follower_cache.py            # writes benchmarks/results/follower_cache.json
    python benchmarks/follower_cache.py --epochs 5 --copies 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_team  # noqa: E402
from _common import RESULTS, load_average, machine, write_json  # noqa: E402
from keras_team import heads, zoo  # noqa: E402
from keras_team.caching import fit_follower  # noqa: E402
from keras_team.data import Task, digits  # noqa: E402

NAME = "follower_cache"
SIZE = 32
TARGET_SPEEDUP = 5.0


def upscale(x: np.ndarray) -> np.ndarray:
    """8x8x1 uint8 digits -> 32x32x3 uint8 (nearest-neighbour, channel repeated)."""
    factor = SIZE // x.shape[1]
    x = np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)
    return np.repeat(x, 3, axis=3)


def shifted_copies(x: np.ndarray, y: np.ndarray, copies: int, rng: np.random.Generator):
    """The originals plus `copies` versions each shifted by up to 3 pixels (train only)."""
    xs, ys = [x], [y]
    for _ in range(copies):
        shifted = np.empty_like(x)
        for i, image in enumerate(x):
            dy, dx = rng.integers(-3, 4, size=2)
            shifted[i] = np.roll(image, (dy, dx), axis=(0, 1))
        xs.append(shifted)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def image_task(classes, *, seed: int, batch_size: int, copies: int = 0) -> Task:
    """Digits of `classes` as 32x32x3 images; the train split grown by shifted copies."""
    small = digits(classes=classes, seed=seed, batch_size=batch_size)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, (x, y) in small.splits.items():
        x = upscale(x)
        if split == "train" and copies:
            x, y = shifted_copies(x, y, copies, rng)
        splits[split] = (x, y)
    return Task(f"digits{SIZE}", splits, small.class_names, batch_size=batch_size, seed=seed)


class CountExamples(keras.layers.Layer):
    """Identity that adds the batch size to a counter each time it runs (in-graph)."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count", dtype="int64")

    def call(self, x):
        self.count.assign_add(keras.ops.cast(keras.ops.shape(x)[0], "int64"))
        return x


def accuracy(model: keras.Model, task: Task) -> float:
    x, y = task.splits["test"]
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="follower epochs, each way (default %(default)s)")
    parser.add_argument("--copies", type=int, default=4, help="shifted copies added to the target train split (default %(default)s)")
    parser.add_argument("--filters", default="64,128,256", help="residual_cnn filters per block (default %(default)s)")
    parser.add_argument("--leader-epochs", type=int, default=2, help="leader pre-training epochs on digits 0-4, untimed (default %(default)s)")
    parser.add_argument("--cached-repeats", type=int, default=3,
                        help="runs of the (short) cached way; the median counts (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    filters = tuple(int(f) for f in args.filters.split(","))

    verbose = 1 if sys.stdout.isatty() else 2  # progress bars on a terminal, a line per epoch in a log
    load_before = load_average()
    keras.utils.set_random_seed(args.seed)
    source = image_task(range(5), seed=args.seed, batch_size=args.batch_size)
    target = image_task(range(5, 10), seed=args.seed, batch_size=args.batch_size, copies=args.copies)
    n_train = len(target.splits["train"][1])
    print(f"data: target train {n_train} examples of {target.input_shape}, test {len(target.splits['test'][1])}")

    # --- leader: trained briefly on the source task, transferred, frozen (untimed setup) ---
    print(f"\n== leader: residual_cnn{filters}, {args.leader_epochs} epoch(s) on digits 0-4 (setup, untimed)")
    leader = zoo.residual_cnn(target.input_shape, source.num_classes, filters=filters, name="leader")
    leader.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    leader.fit(source.dataset("train", training=True), epochs=args.leader_epochs, verbose=verbose, shuffle=False)
    student = keras_team.transfer(leader, "avg_pool", heads.dense(target.num_classes), name="student")
    team = keras_team.Team({"leader": student}, [keras_team.Follower(zoo.mlp(target.num_classes, hidden=(50,)), tap="features")])
    graph = team.follower_graphs["mlp"]
    tap_model = team.tap_models["leader"]
    tap_model.trainable = False  # the whole leader frozen (its body is frozen by transfer already)
    initial = [w.copy() for w in graph.get_weights()]  # same starting follower for both ways

    # The write-up's way, built from the same Team: raw images -> frozen leader taps -> follower graph.
    pixels = keras.Input(target.input_shape, name="pixels")
    counter = CountExamples(name="leader_runs")
    taps = tap_model(counter(pixels))
    uncached = keras.Model(pixels, graph({"leader_features": taps["features"]}), name="recompute_leader")
    assert {id(w) for w in uncached.trainable_weights} == {id(w) for w in graph.trainable_weights}, "leader not frozen"
    assert not student.get_layer("body").trainable_weights, "leader body not frozen"
    leader_weights = [w.copy() for w in tap_model.get_weights()]

    # --- cached: fit_follower (one leader pass over the data, then the follower alone) ---
    # It is short, so a burst of other load skews it: it runs `--cached-repeats` times from the
    # same start (weights, seed, untraced leader) and the median counts.
    cached_runs = {"examples": 0, "seconds": 0.0}
    cache_taps = keras_team.caching.cache_taps

    def counted_cache_taps(*args, **kwargs):  # counts (and times) the caching pass of fit_follower
        start = time.perf_counter()
        cache = cache_taps(*args, **kwargs)
        cached_runs["seconds"] += time.perf_counter() - start
        cached_runs["examples"] += len(cache.labels)
        return cache

    keras_team.caching.cache_taps = counted_cache_taps
    cached = []
    for repeat in range(1, args.cached_repeats + 1):
        print(f"\n== cached ({repeat}/{args.cached_repeats}): fit_follower, {args.epochs} epochs "
              "(leader runs once over the data)")
        graph.set_weights(initial)
        # each repeat traces the leader afresh, as the first did (cache_taps builds its reader anew)
        cached_runs.update(examples=0, seconds=0.0)
        keras.utils.set_random_seed(args.seed)
        start = time.perf_counter()
        history = fit_follower(team, "mlp", target.dataset("train"), epochs=args.epochs,
                               optimizer=keras.optimizers.Adam(1e-3), batch_size=args.batch_size,
                               seed=args.seed, verbose=verbose)
        cached.append({"seconds": time.perf_counter() - start, "caching_pass_seconds": cached_runs["seconds"],
                       "leader_forward_examples": cached_runs["examples"],
                       "test_accuracy": accuracy(uncached, target),  # same graph weights, raw test images
                       "final_train_accuracy": float(history.history["accuracy"][-1])})
    keras_team.caching.cache_taps = cache_taps  # back to the library's own
    middle = sorted(cached, key=lambda run: run["seconds"])[len(cached) // 2]  # the median run
    cached_seconds, cached_accuracy = middle["seconds"], middle["test_accuracy"]
    cached_train_accuracy = middle["final_train_accuracy"]
    cached_runs = {"examples": middle["leader_forward_examples"], "seconds": middle["caching_pass_seconds"]}
    if not cached_runs["examples"]:  # fit_follower no longer calls cache_taps: nothing was counted
        print("warning: the caching pass was not seen (keras_team.caching changed how it runs the leader); "
              "its count and seconds are left out", file=sys.stderr)
        cached_runs = {"examples": None, "seconds": None}

    # --- recompute: the frozen leader runs for every batch of every epoch ---
    graph.set_weights(initial)
    counter.count.assign(0)
    print(f"\n== recompute: frozen leader + follower fitted on raw images, {args.epochs} epochs")
    keras.utils.set_random_seed(args.seed)
    x, y = target.splits["train"]
    train = (tf.data.Dataset.from_tensor_slices((x, y))
             .shuffle(len(y), seed=args.seed, reshuffle_each_iteration=True)
             .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
    uncached.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    start = time.perf_counter()
    history = uncached.fit(train, epochs=args.epochs, verbose=verbose, shuffle=False)
    uncached_seconds = time.perf_counter() - start
    uncached_runs = int(counter.count.numpy())
    uncached_accuracy = accuracy(uncached, target)
    uncached_train_accuracy = float(history.history["accuracy"][-1])
    unchanged = all(np.array_equal(a, b) for a, b in zip(leader_weights, tap_model.get_weights()))

    speedup = uncached_seconds / cached_seconds
    result = {
        "benchmark": NAME,
        "what": "follower training: cached taps (fit_follower) vs frozen leader recomputed every batch",
        "leader": f"keras_team.zoo.residual_cnn filters={list(filters)}, transferred at 'avg_pool', frozen",
        "leader_params": int(leader.count_params()),
        "follower": f"keras_team.zoo.mlp hidden=[50] on the 'features' tap ({taps['features'].shape[-1]} wide)",
        "data": f"digits 5-9 upscaled to {SIZE}x{SIZE}x3, train grown by {args.copies} shifted copies",
        "train_examples": n_train,
        "test_examples": int(len(target.splits["test"][1])),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "cached": {
            "seconds": round(cached_seconds, 3),
            "of_which_caching_pass_seconds": None if cached_runs["seconds"] is None else round(cached_runs["seconds"], 3),
            "seconds_each_repeat": [round(run["seconds"], 3) for run in cached],
            "test_accuracy_each_repeat": [round(run["test_accuracy"], 4) for run in cached],
            "leader_forward_examples": cached_runs["examples"],
            "test_accuracy": round(cached_accuracy, 4),
            "final_train_accuracy": round(cached_train_accuracy, 4),
        },
        "recompute": {
            "seconds": round(uncached_seconds, 3),
            "leader_forward_examples": uncached_runs,
            "test_accuracy": round(uncached_accuracy, 4),
            "final_train_accuracy": round(uncached_train_accuracy, 4),
        },
        "expected_leader_forward_examples": {"cached": n_train, "recompute": n_train * args.epochs},
        "speedup": round(speedup, 2),
        "accuracy_difference_points": round(100 * (cached_accuracy - uncached_accuracy), 2),
        "leader_weights_unchanged": unchanged,
        "target": {"speedup_at_least": TARGET_SPEEDUP, "met": speedup >= TARGET_SPEEDUP},
        "machine": {**machine(load_before), "gpus": len(tf.config.list_physical_devices("GPU"))},
    }
    output = write_json(args.output, result)
    print(f"\n{NAME}: cached {cached_seconds:.1f} s ({cached_runs['examples']} leader passes) vs "
          f"recompute {uncached_seconds:.1f} s ({uncached_runs} leader passes): {speedup:.1f}x faster "
          f"(target >= {TARGET_SPEEDUP:g}x: {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'})")
    print(f"test accuracy: cached {cached_accuracy:.3f}, recompute {uncached_accuracy:.3f}; "
          f"leader weights unchanged: {unchanged}")
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
