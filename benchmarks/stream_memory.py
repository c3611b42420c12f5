"""Peak memory of a k-shot task streamed from TFDS vs the same task materialised.

The data is a generated CIFAR-100-shaped TFDS dataset (`cifar100`'s
features under `tfds.testing.mock_data`, pixels drawn by a seeded
`tf.data` generator, so nothing downloads), `--examples` in each split.
Each way runs in a fresh process: the streamed way
(`keras_team.data.tfds_stream`) iterates its train, validation and test
pipelines once; the materialised way reads the train split into numpy and splits
it with `keras_team.data.from_dataset` (train/validation/test from it), as
the in-memory tasks do. Peak resident memory
above the process's resident memory before the pass is measured with
Linux's `VmHWM` (reset through `/proc/self/clear_refs`).

Run from the repository root:

    python benchmarks/stream_memory.py       # writes benchmarks/results/stream_memory.json
    python benchmarks/stream_memory.py --examples 20000 --mode streamed --print
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from _common import RESULTS, load_average, machine, write_json
ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPE, CLASSES = (32, 32, 3), 100


def _status(field: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in bytes."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _generated(examples: int):
    """An `as_dataset_fn` for tfds.testing.mock_data: seeded CIFAR-shaped examples, made on the fly."""
    import tensorflow as tf

    def as_dataset(self, split, **kwargs):
        salt = 0 if str(split).startswith("train") else 1

        def example(i):
            image = tf.random.stateless_uniform(SHAPE, seed=tf.stack([i, salt]), maxval=256, dtype=tf.int32)
            return {"image": tf.cast(image, tf.uint8), "label": i % CLASSES, "id": tf.strings.as_string(i),
                    "coarse_label": i % 20}

        return tf.data.Dataset.range(examples).map(example)

    return as_dataset


def measure(examples: int, mode: str, shots: int, classes: int) -> dict:
    """In this process: peak memory of building and passing once over the task's splits."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from keras_team import data

    subset = list(range(classes))
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_generated(examples)):
        data.tfds_stream("cifar100", classes=subset[:1], shots=1).dataset("test")  # warm imports and tracing
        pathlib.Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _status("VmRSS")
        start = time.perf_counter()
        kwargs = dict(classes=subset, shots=shots, validation=0.1, seed=0, batch_size=100)
        if mode == "streamed":
            task = data.tfds_stream("cifar100", **kwargs)
        else:  # the in-memory way: the train split read into numpy, then split as from_arrays does
            train = tfds.builder("cifar100").as_dataset(split="train", as_supervised=True)
            task = data.from_dataset(train.map(lambda x, y: (x, tf.cast(y, tf.int32))), **kwargs)
        counts = {split: sum(int(y.shape[0]) for _, y in task.dataset(split)) for split in ("train", "validation", "test")}
        seconds = time.perf_counter() - start
        peak = _status("VmHWM")
    return {"mode": mode, "examples_per_split": examples, "dataset_bytes_per_split": examples * 32 * 32 * 3,
            "peak_bytes_above_start": peak - before, "examples_served": counts, "seconds": round(seconds, 2)}


def in_subprocess(examples: int, mode: str, shots: int, classes: int) -> dict:
    """`measure` in a fresh Python process."""
    out = subprocess.run(
        [sys.executable, __file__, "--examples", str(examples), "--mode", mode, "--shots", str(shots),
         "--classes", str(classes), "--print"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=60000, help="examples in each split")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--classes", type=int, default=100, help="the first N classes form the task")
    parser.add_argument("--mode", choices=("streamed", "materialised"))
    parser.add_argument("--print", action="store_true", help="measure one mode here and print its JSON")
    args = parser.parse_args(argv)
    if args.print:
        print(json.dumps(measure(args.examples, args.mode, args.shots, args.classes)), flush=True)
        return
    load_before = load_average()
    runs = {mode: in_subprocess(args.examples, mode, args.shots, args.classes) for mode in ("streamed", "materialised")}
    result = {
        "what": "peak resident memory above the start of a k-shot task's build and one pass over its splits",
        "shots": args.shots, "classes": args.classes, **runs,
        "materialised_over_streamed_peak": round(
            runs["materialised"]["peak_bytes_above_start"] / max(runs["streamed"]["peak_bytes_above_start"], 1), 2),
        "machine": machine(load_before),
    }
    write_json(RESULTS / "stream_memory.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
