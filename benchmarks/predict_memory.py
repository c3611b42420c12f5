"""Peak memory of `keras_team.predict` on a large folder of images: a batch at a time (now) vs all read first (before).

A tiny finished run (seed_cnn leader, one epoch per stage, on a generated
folder of 3 classes of 32x32 PNGs) predicts a generated folder of `--images`
32x32 RGB PNGs (random pixels, seeded, written once into a temporary
folder). Each way runs in a fresh process: `batched` calls
`keras_team.predict` (images decoded by a `tf.data` pipeline and predicted
`BATCH_SIZE` at a time); `all_at_once` is the way before (every image
decoded eagerly into one array, then one `team.predict` over it, then the
same top-3 answers). Peak resident memory is Linux's `VmHWM`, reset
(`/proc/self/clear_refs`) once TensorFlow and keras-team are imported; the
team's load counts in both. Both ways' answers are compared (same inputs in
the same order, same classes, probabilities to float tolerance).

Run from the repository root:

    python benchmarks/predict_memory.py              # writes benchmarks/results/predict_memory.json
    python benchmarks/predict_memory.py --images 2000
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
SHAPE = (32, 32, 3)
COLOURS = ((210, 40, 40), (40, 190, 40), (40, 40, 220))


def _status(field: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in bytes."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def write_images(folder: pathlib.Path, images: int) -> pathlib.Path:
    """`images` 32x32 RGB PNGs of random pixels in `folder` (seeded)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 256, SHAPE, dtype=np.uint8)).save(folder / f"{i:06d}.png")
    return folder


def make_run(root: pathlib.Path) -> pathlib.Path:
    """A tiny finished `keras-team run` on a generated folder of three colours (train/ and test/)."""
    import numpy as np
    from PIL import Image

    from keras_team.app import cli

    rng = np.random.default_rng(1)
    for split, count in (("train", 10), ("test", 4)):
        for c, colour in enumerate(COLOURS):
            (root / "colours" / split / f"c{c}").mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.integers(-30, 31, SHAPE), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / "colours" / split / f"c{c}" / f"{i}.png")
    settings = {"data.source.name": root / "colours", "data.target.name": root / "colours",
                "data.source.classes": "null", "data.target.classes": "null", "data.target.shots": "4",
                "data.batch_size": "16", "leader.architecture": "seed_cnn", "transfer.keep": "fc1",
                **{f"{stage}.epochs": "1" for stage in ("leader", "transfer", "followers.0", "baseline")}}
    argv = ["run", "--quiet", "--output-dir", str(root / "run")]
    if cli.main(argv + [arg for field, value in settings.items() for arg in ("--set", f"{field}={value}")]) != 0:
        raise SystemExit("the tiny keras-team run failed")
    return root / "run"


def all_at_once(run_dir: str, folder: str) -> list:
    """The way before: every image decoded eagerly into one array, then one `team.predict` over all of it."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_team import Team, predictions

    sources = predictions._sources(folder)
    team, class_names, weights = predictions._read_run(pathlib.Path(run_dir))
    shape = tuple(team.inputs[0].shape[1:])
    images = []
    for path in sources:
        image = tf.io.decode_image(tf.io.read_file(str(path)), channels=shape[-1], expand_animations=False)
        if tuple(image.shape[:2]) != shape[:2]:
            image = tf.image.resize(image, shape[:2], method="bilinear")
        images.append(np.round(image.numpy()).astype(np.uint8)[np.newaxis])
    x = np.concatenate(images)
    probabilities = keras.ops.convert_to_numpy(Team.ensemble(team.predict(x, verbose=0), weights))
    return predictions._most_probable([str(path) for path in sources], probabilities, class_names, 3)


def measure(run_dir: str, folder: str, mode: str, answers: str) -> dict:
    """In this process: peak memory and seconds of predicting `folder` one way; the answers written to `answers`."""
    import dataclasses

    import tensorflow as tf

    import keras_team

    tf.constant(0) + 1  # the runtime started
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    predicted = keras_team.predict(run_dir, folder) if mode == "batched" else all_at_once(run_dir, folder)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    pathlib.Path(answers).write_text(json.dumps([dataclasses.astuple(p) for p in predicted]))
    return {"mode": mode, "peak_rss_bytes": peak, "rss_after_imports_bytes": before,
            "peak_bytes_above_imports": peak - before, "seconds": round(seconds, 1), "inputs": len(predicted)}


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args, "--print"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"))
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))


def agreement(a: list, b: list) -> dict:
    """How far two ways' answers (input, classes, probabilities) differ."""
    import numpy as np

    return {"same_inputs_in_order": [x[0] for x in a] == [x[0] for x in b],
            "same_classes": all(x[1] == y[1] for x, y in zip(a, b)),
            "max_probability_difference": float(np.abs(np.array([x[2] for x in a]) - np.array([x[2] for x in b])).max())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000, help="PNGs in the generated folder to predict")
    parser.add_argument("--print", action="store_true", help="measure one way here and print its JSON")
    parser.add_argument("--mode", choices=("batched", "all_at_once"))
    parser.add_argument("--run-dir")
    parser.add_argument("--folder")
    parser.add_argument("--answers")
    args = parser.parse_args(argv)
    if args.print:
        print(json.dumps(measure(args.run_dir, args.folder, args.mode, args.answers)), flush=True)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        start = time.perf_counter()
        folder = write_images(root / "images", args.images)
        written = time.perf_counter() - start
        run_dir = make_run(root)
        runs, answers = {}, {}
        for mode in ("batched", "all_at_once"):
            path = root / f"{mode}.json"
            runs[mode] = _child("--mode", mode, "--run-dir", str(run_dir), "--folder", str(folder), "--answers", str(path))
            answers[mode] = json.loads(path.read_text())
    result = {
        "what": "peak resident memory (VmHWM) of keras_team.predict on a folder of PNGs: a batch at a time vs "
                "every image read first (the way before), each in a fresh process",
        "images": args.images, "image_shape": list(SHAPE), "decoded_bytes": args.images * 32 * 32 * 3,
        "seconds_to_write_folder": round(written, 1), **runs,
        "all_at_once_over_batched_peak_above_imports": round(
            runs["all_at_once"]["peak_bytes_above_imports"] / max(runs["batched"]["peak_bytes_above_imports"], 1), 2),
        "answers": agreement(answers["batched"], answers["all_at_once"]),
        "machine": machine(load_before),
    }
    write_json(RESULTS / "predict_memory.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
