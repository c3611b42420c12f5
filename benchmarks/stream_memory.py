"""Peak memory of data streamed vs materialised: a k-shot TFDS task, and a whole `keras-team run` on a folder.

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

`--part folder` measures a whole `keras-team run` instead: a generated
folder of `--images` 32x32 RGB PNGs in 10 class subfolders (random pixels,
written once into a temporary folder), source classes c0-c4, target c5-c9
with every example (no k-shot), one epoch per stage (seed_cnn cut at fc1, the
default MLP follower on cached taps, the scratch baseline, the evaluation),
once with `data.stream=true` (file names split, pixels decoded batch by
batch) and once with `data.stream=false` (both tasks read into numpy), each
in a fresh process. `--part steps` measures, on the same kind of folder streamed,
the steps that read the target outside training (the cosine head's imprint,
the cut advisor of `keep: auto`, `keras-team tune`'s search data) with the
split(s) decoded into arrays as they were, and as they now read them. It records the process's peak resident memory (VmHWM)
and the peak above the resident memory once TensorFlow and keras-team are
imported. Each part updates its own keys of the JSON file.

Run from the repository root:

    python benchmarks/stream_memory.py       # writes benchmarks/results/stream_memory.json
    python benchmarks/stream_memory.py --examples 20000 --mode streamed --print
    python benchmarks/stream_memory.py --part folder --images 20000
    python benchmarks/stream_memory.py --part steps --images 20000
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from _common import RESULTS, load_average, machine, write_json
ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPE, CLASSES = (32, 32, 3), 100
FOLDER_CLASSES = 10


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


def write_folder(root: pathlib.Path, images: int) -> pathlib.Path:
    """`images` 32x32 RGB PNGs of random pixels in FOLDER_CLASSES class subfolders c0, c1, ... (seeded)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"c{i % FOLDER_CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, SHAPE, dtype=np.uint8)).save(folder / f"{i:06d}.png")
    return root


def measure_run(folder: str, mode: str) -> dict:
    """In this process: peak memory of one `keras-team run` on `folder`, streamed or materialised."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from keras_team.app import cli, recipe, report  # noqa: F401  (what a run imports, before the baseline)

    tf.constant(0) + 1  # the runtime started

    half = FOLDER_CLASSES // 2
    settings = {
        "data.source.name": folder, "data.source.classes": f"[{','.join(f'c{i}' for i in range(half))}]",
        "data.target.name": folder, "data.target.classes": f"[{','.join(f'c{i}' for i in range(half, FOLDER_CLASSES))}]",
        "data.target.shots": "null", "data.batch_size": "128", "data.stream": str(mode == "streamed").lower(),
        "leader.architecture": "seed_cnn", "transfer.keep": "fc1",
        **{f"{stage}.epochs": "1" for stage in ("leader", "transfer", "followers.0", "baseline")},
    }
    with tempfile.TemporaryDirectory() as out:
        pathlib.Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _status("VmRSS")
        start = time.perf_counter()
        argv = ["run", "--quiet", "--output-dir", str(pathlib.Path(out) / "run")]
        code = cli.main(argv + [arg for field, value in settings.items() for arg in ("--set", f"{field}={value}")])
        seconds = time.perf_counter() - start
        peak = _status("VmHWM")
        report = json.loads((pathlib.Path(out) / "run" / "report.json").read_text()) if code == 0 else {}
    if code != 0:
        raise SystemExit(f"keras-team run exited {code}")
    return {"mode": mode, "peak_rss_bytes": peak, "rss_after_imports_bytes": before,
            "peak_bytes_above_imports": peak - before, "seconds": round(seconds, 1),
            "test_examples": report["examples"],
            "ensemble_test_accuracy": report["ensemble"]["test_accuracy"]}


STEPS = ("imprint", "rank_keep", "tune_data")


def measure_step(folder: str, step: str, mode: str) -> dict:
    """In this process: peak memory of one step on a streamed folder's target, as it was ("arrays") or is ("examples").

    "arrays" is the code before `keras_team.data.examples`: the split(s) the
    step reads decoded into numpy (`task.splits`, `task.images`); "examples"
    is the step as the recipe and `keras-team tune` now run it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    import keras_team
    from keras_team import data, heads
    from keras_team.app import recipe
    from keras_team.app.config import load_config
    from keras_team.app.tune import TuneJob
    from keras_team.tuning.search import cap_per_class

    half = FOLDER_CLASSES // 2
    config = load_config(overrides=[
        f"data.source.name={folder}", f"data.source.classes=[{','.join(f'c{i}' for i in range(half))}]",
        f"data.target.name={folder}", f"data.target.classes=[{','.join(f'c{i}' for i in range(half, FOLDER_CLASSES))}]",
        "data.target.shots=null", "data.batch_size=128", "data.stream=true", "tune.space.top_k_cuts=2"])
    _, target = recipe.load_tasks(config)
    leader = keras_team.zoo.seed_cnn(SHAPE, half)
    student = keras_team.transfer(leader, "fc1", heads.cosine(half))
    tf.constant(0) + 1  # the runtime started
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    if step == "imprint":
        heads.imprint(student, *((target.images("train"), target.labels("train")) if mode == "arrays"
                                 else data.examples(target, ["train"])))
    elif step == "rank_keep" and mode == "arrays":
        (x, y), (xv, yv) = target.splits["train"], target.splits["validation"]
        keras_team.rank_cuts(leader, np.concatenate([x, xv]), np.concatenate([y, yv]),
                             cuts=keras_team.cut_points(leader, view="blocks"))
    elif step == "rank_keep":
        recipe.rank_keep(leader, target)
    elif mode == "arrays":  # tune_data: TuneJob.data and the advisor's examples as they were
        x_val, y_val = target.splits["validation"]
        capped = cap_per_class(x_val, y_val, None)
        x, y = target.splits["train"]
        rank_data = tuple(np.concatenate([a, b]) for a, b in zip((x, y), capped))
    else:  # what the search then reads: one pass over its training and validation data and the advisor's examples
        job = TuneJob(config)
        (train, _), validation, _ = job.data(target)
        for ds in (train, validation, job.rank_data[0]):
            for _ in ds:
                pass
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    return {"step": step, "mode": mode, "peak_bytes_above_start": peak - before, "seconds": round(seconds, 1),
            "train_examples": len(target.labels("train")), "validation_examples": len(target.labels("validation"))}


def steps_part(images: int) -> dict:
    """Each step of `measure_step` both ways on one generated folder, each in a fresh process."""
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(pathlib.Path(tmp) / "images", images)
        runs = {step: {mode: _child("--part", "steps", "--folder", str(folder), "--step", step, "--mode", mode)
                       for mode in ("arrays", "examples")} for step in STEPS}
    return {
        "what": "peak resident memory (VmHWM) above the start of one step on a streamed folder's target "
                "(classes c5-c9, every example): the split(s) decoded into arrays (before) vs read through "
                "keras_team.data.examples / the streamed search data (now); seed_cnn leader, cosine head at fc1",
        "images": images, "image_shape": list(SHAPE), **runs,
        "arrays_over_examples_peak": {step: round(r["arrays"]["peak_bytes_above_start"]
                                                  / max(r["examples"]["peak_bytes_above_start"], 1), 2)
                                      for step, r in runs.items()},
        "machine": machine(load_before),
    }


def _child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args, "--print"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))


def in_subprocess(examples: int, mode: str, shots: int, classes: int) -> dict:
    """`measure` in a fresh Python process."""
    return _child("--examples", str(examples), "--mode", mode, "--shots", str(shots), "--classes", str(classes))


def _update(keys: dict) -> dict:
    """The results file with `keys` replaced (the other part's keys kept)."""
    path = RESULTS / "stream_memory.json"
    result = {**(json.loads(path.read_text()) if path.exists() else {}), **keys}
    write_json(path, result)
    return result


def folder_part(images: int) -> dict:
    """Both modes of `measure_run` on one generated folder, each in a fresh process."""
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = write_folder(pathlib.Path(tmp) / "images", images)
        written = time.perf_counter() - start
        runs = {mode: _child("--part", "folder", "--folder", str(folder), "--mode", mode)
                for mode in ("streamed", "materialised")}
    return {
        "what": "peak resident memory (VmHWM) of a whole keras-team run on a folder of PNGs, each mode in a fresh process",
        "images": images, "image_shape": list(SHAPE), "decoded_bytes": images * 32 * 32 * 3,
        "seconds_to_write_folder": round(written, 1), **runs,
        "materialised_over_streamed_peak_above_imports": round(
            runs["materialised"]["peak_bytes_above_imports"] / max(runs["streamed"]["peak_bytes_above_imports"], 1), 2),
        "machine": machine(load_before),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=60000, help="examples in each split")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--classes", type=int, default=100, help="the first N classes form the task")
    parser.add_argument("--mode", choices=("streamed", "materialised", "arrays", "examples"))
    parser.add_argument("--step", choices=STEPS, help="--part steps --print: the step to measure")
    parser.add_argument("--print", action="store_true", help="measure one mode here and print its JSON")
    parser.add_argument("--part", choices=("tfds", "folder", "steps"), default="tfds")
    parser.add_argument("--images", type=int, default=20000, help="--part folder: PNGs in the generated folder")
    parser.add_argument("--folder", help="--part folder --print: the folder to run on")
    args = parser.parse_args(argv)
    if args.print:
        if args.part == "folder":
            print(json.dumps(measure_run(args.folder, args.mode)), flush=True)
        elif args.part == "steps":
            print(json.dumps(measure_step(args.folder, args.step, args.mode)), flush=True)
        else:
            print(json.dumps(measure(args.examples, args.mode, args.shots, args.classes)), flush=True)
        return
    if args.part == "folder":
        print(json.dumps(_update({"folder_run": folder_part(args.images)})["folder_run"], indent=2))
        return
    if args.part == "steps":
        print(json.dumps(_update({"folder_steps": steps_part(args.images)})["folder_steps"], indent=2))
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
    print(json.dumps(_update(result), indent=2))


if __name__ == "__main__":
    main()
