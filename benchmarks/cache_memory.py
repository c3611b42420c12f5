"""Peak memory of caching a follower's taps: the old way vs `keras_team.caching`.

A CIFAR-10-sized job: 50,000 synthetic 32x32x3 uint8 images through
`keras_team.zoo.residual_cnn` transferred at `pool1` (a conv feature map,
16x16x16 = 4,096 floats per example, 0.8 GB as float32), frozen; the
follower reads the `features` tap. Each way runs in its own subprocess and
reports its peak resident memory (`ru_maxrss`) minus its resident memory
just before caching (TensorFlow, the model and the images are already
loaded then, the same for every way):

- ``baseline``: the method `cache_taps` used before (reimplemented here):
  `predict_on_batch` per batch of 256 into a list of float32 arrays,
  `np.concatenate`, then `tf.data.Dataset.from_tensor_slices` of the
  arrays, a shuffle buffer as long as the data, and the first batch drawn
  (which fills the buffer).
- ``auto``: `cache_taps` as shipped (chunked `model.predict`, float32 under
  `FLOAT16_ABOVE_BYTES`, float16 above it) and the first batch of
  `cached_batches` (batches gathered by index: no copy, no shuffle buffer).
- ``float16``: the same with ``dtype="float16"``.
- ``disk``: the same with ``directory=`` (memory-mapped files).

Every way also records the seconds its caching took. Run from the
repository root (a few minutes on two CPU cores):

    python benchmarks/cache_memory.py              # writes benchmarks/results/cache_memory.json
    python benchmarks/cache_memory.py --examples 10000
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import RESULTS, load_average, machine, write_json  # noqa: E402
NAME = "cache_memory"
WAYS = ("baseline", "auto", "float16", "disk")
BATCH = 32  # the follower's training batch


def _rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(way: str, examples: int, cut: str) -> dict:
    """Cache the taps one way in this process; return its memory and time figures."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_team
    from keras_team.caching import CACHE_BATCH, cache_taps, cached_batches

    keras.utils.set_random_seed(0)
    leader = keras_team.zoo.residual_cnn((32, 32, 3), 10)
    student = keras_team.transfer(leader, keep=cut, head=keras_team.heads.dense(10))
    team = keras_team.Team(student, [keras_team.Follower(keras_team.zoo.mlp(10), tap="features")])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (examples, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, examples).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    tap_shape = tuple(keras_team.taps.tap_tensor(student, "features").shape[1:])
    before = _current_rss_mib()
    start = time.perf_counter()
    if way == "baseline":
        taps, labels = [], []
        for images, targets in data.unbatch().batch(CACHE_BATCH):
            taps.append(np.asarray(team.tap_models["leader"].predict_on_batch(images)["features"]))
            labels.append(np.asarray(targets))
        cache = {"leader_features": np.concatenate(taps)}, np.concatenate(labels)
        del taps
        ds = tf.data.Dataset.from_tensor_slices(cache).shuffle(examples, seed=0).batch(BATCH)
        next(iter(ds))
    else:
        with tempfile.TemporaryDirectory() as directory:
            cache = cache_taps(team, "mlp", data, verbose=0,
                               dtype="float16" if way == "float16" else "auto",
                               directory=os.path.join(directory, "taps") if way == "disk" else None)
            next(iter(cached_batches(cache, outputs=1, batch_size=BATCH, seed=0)))
            stored = {key: str(array.dtype) for key, array in cache.inputs.items()}
    seconds = time.perf_counter() - start
    peak = _rss_mib()
    return {
        "way": way,
        "examples": examples,
        "tap_shape": tap_shape,
        "rss_before_caching_mib": round(before, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_increase_mib": round(peak - before, 1),
        "float32_tap_mib": round(examples * int(np.prod(tap_shape)) * 4 / 2**20, 1),
        "stored_dtype": "float32" if way == "baseline" else stored["leader_features"],
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--cut", default="pool1")
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.examples, args.cut)))
        return

    load_before = load_average()
    root = pathlib.Path(__file__).resolve().parents[1]
    runs = {}
    for way in args.ways:
        print(f"== {way}: caching {args.examples} examples at {args.cut!r} in a subprocess", flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", way, "--examples", str(args.examples),
                              "--cut", args.cut], cwd=root, capture_output=True, text=True, check=True)
        runs[way] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"   peak +{runs[way]['peak_increase_mib']:.0f} MiB over {runs[way]['rss_before_caching_mib']:.0f} MiB, "
              f"stored as {runs[way]['stored_dtype']}, {runs[way]['seconds']:.1f} s", flush=True)
    result = {
        "what": "peak resident memory of caching a follower's features tap (CIFAR-10-sized, residual_cnn cut)",
        "examples": args.examples,
        "cut": args.cut,
        "runs": runs,
        "peak_increase_ratio_vs_baseline": {
            way: round(runs["baseline"]["peak_increase_mib"] / max(run["peak_increase_mib"], 1.0), 2)
            for way, run in runs.items() if "baseline" in runs
        },
        "machine": machine(load_before),
    }
    output = write_json(args.output, result)
    print(f"wrote {output}")
    for way, ratio in result["peak_increase_ratio_vs_baseline"].items():
        print(f"  {way:8s} peak increase {runs[way]['peak_increase_mib']:7.0f} MiB  (baseline / this = {ratio:.2f})")


if __name__ == "__main__":
    main()
