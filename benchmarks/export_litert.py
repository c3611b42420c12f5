"""LiteRT file sizes and agreement per quantization; single-example latency of each runtime.

A digits classifier (`keras_team.zoo.residual_cnn`, filters 32 and 64, all
ten digits, the bundled 8x8 images as uint8) is trained briefly, then
exported with `keras_team.export` as float32, dynamic-range, float16 and
int8 LiteRT files (int8 calibrated on 200 unaugmented training examples) and
as a SavedModel. Each file is checked with `keras_team.export.verify` on the
validation split (its tolerance: a fraction of the Keras logits' range there,
`keras_team.export.TOLERANCES`); the test split only reports each file's
top-1 agreement with the Keras model, its logit difference and its accuracy.

Latency of one example (batch 1), for: calling the Keras model
(`model(x, training=False)`, eager, as an application would without a
serving runtime), the reloaded SavedModel's signature, and the LiteRT
float32 and int8 files through the ai-edge-litert signature runner. The
four are timed round-robin (one call of each per round) so a burst of load
from other processes hits all of them alike; medians over the rounds count.

Targets: int8 file at most 0.35x the float32 file with at least 99% top-1
agreement; LiteRT float32 at least 5x faster than calling the Keras model.

Run from the repository root:

    python benchmarks/export_litert.py          # writes benchmarks/results/export_litert.json
    python benchmarks/export_litert.py --rounds 100 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from _common import RESULTS, load_average, machine, median_latencies, write_json  # noqa: E402
from keras_team import data, export, zoo  # noqa: E402
from keras_team.errors import KerasTeamError  # noqa: E402
from keras_team.export.parity import compare, keras_outputs, tflite_outputs  # noqa: E402

NAME = "export_litert"
TARGET_SIZE_RATIO = 0.35
TARGET_AGREEMENT = 0.99
TARGET_SPEEDUP = 5.0
QUANTIZATIONS = ("float32", "dynamic", "float16", "int8")


def train(epochs: int, seed: int) -> tuple[keras.Model, data.Task]:
    keras.utils.set_random_seed(seed)
    task = data.digits(seed=seed)
    model = zoo.residual_cnn(task.input_shape, task.num_classes, filters=(32, 64), name="digits")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(task.dataset("train", training=True), validation_data=task.dataset("validation"),
              epochs=epochs, verbose=0, shuffle=False)
    return model, task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=300, help="latency rounds (one call of each runtime per round)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args()
    load_before = load_average()
    start = time.perf_counter()
    model, task = train(args.epochs, args.seed)
    x_train = task.splits["train"][0]
    x_test, y_test = task.splits["test"]
    reference = keras_outputs(model, x_test)["digits"]
    out = pathlib.Path(tempfile.mkdtemp(prefix="export_litert."))
    paths = {q: out / f"digits.{q}.tflite" for q in QUANTIZATIONS}
    export.tflite_files(model, {paths[q]: q for q in QUANTIZATIONS},
                        representative_data=x_train, input_dtype="uint8", seed=args.seed)
    version = export.saved_model(model, out / "serving", name="digits", input_dtype="uint8")

    # The check: verify on validation, as an export would be checked before the test split is read.
    x_val, y_val = task.splits["validation"]
    labels = {paths[q]: f"tflite-{q}" for q in QUANTIZATIONS}
    try:
        export.verify(model, {label: path for path, label in labels.items()}, x_val, y_val,
                      report_path=out / "validation_report.json")
    except KerasTeamError:
        pass  # recorded in the report: "within_tolerance" below says which file missed
    checked = json.loads((out / "validation_report.json").read_text())["artefacts"]

    files = {}
    for q, path in paths.items():
        entry = checked[f"tflite-{q}"]
        test = compare(reference, tflite_outputs(path, x_test)["serving_default"]["digits"], y_test)  # reported only
        files[q] = {
            "size_bytes": path.stat().st_size,
            "size_vs_float32": path.stat().st_size / paths["float32"].stat().st_size,
            "tolerance": entry["tolerance"],
            "validation": entry["signatures"]["serving_default"]["digits"],
            "within_tolerance": entry["passed"],
            "top1_agreement_with_keras": test["top1_agreement"],
            "max_abs_logit_diff": test["max_abs_diff"],
            "max_logit_diff_of_range": test["max_range_diff"],
            "test_accuracy": test["accuracy"],
        }

    one = x_test[:1]
    one_float = keras.ops.convert_to_tensor(one.astype("float32"))
    signature = tf.saved_model.load(str(version)).signatures["digits"]
    one_tf = tf.constant(one)
    runners = {q: Interpreter(model_path=str(paths[q])).get_signature_runner() for q in ("float32", "int8")}
    latency = median_latencies({
        "keras_call": lambda: model(one_float, training=False),
        "saved_model_signature": lambda: signature(inputs=one_tf),
        "litert_float32": lambda: runners["float32"](inputs=one),
        "litert_int8": lambda: runners["int8"](inputs=one),
    }, args.rounds)

    results = {
        "benchmark": NAME,
        "model": "keras_team.zoo.residual_cnn(filters=(32, 64)) on 8x8x1 uint8 digits, 10 classes",
        "parameters": int(model.count_params()),
        "epochs": args.epochs,
        "seed": args.seed,
        "test_examples": int(len(y_test)),
        "keras_test_accuracy": float(np.mean(reference.argmax(-1) == y_test)),
        "files": files,
        "latency_rounds": args.rounds,
        "median_latency_ms_batch1": {name: round(seconds * 1e3, 4) for name, seconds in latency.items()},
        "speedup_vs_keras_call": {name: latency["keras_call"] / seconds for name, seconds in latency.items()},
        "targets": {
            "int8_size_vs_float32": f"<= {TARGET_SIZE_RATIO}",
            "int8_top1_agreement": f">= {TARGET_AGREEMENT}",
            "litert_float32_speedup_vs_keras_call": f">= {TARGET_SPEEDUP}",
        },
        "met": {
            "int8_size": files["int8"]["size_vs_float32"] <= TARGET_SIZE_RATIO,
            "int8_agreement": files["int8"]["top1_agreement_with_keras"] >= TARGET_AGREEMENT,
            "litert_speedup": latency["keras_call"] / latency["litert_float32"] >= TARGET_SPEEDUP,
        },
        "machine": machine(load_before),
        "seconds": time.perf_counter() - start,
    }
    write_json(args.output, results)
    for q, figures in files.items():
        print(f"{q:8s} {figures['size_bytes'] / 1024:7.1f} KiB ({figures['size_vs_float32']:.2f}x)  "
              f"validation: |diff| {figures['validation']['max_range_diff']:.2%} of the logit range "
              f"(within tolerance: {figures['within_tolerance']})  test: agreement "
              f"{figures['top1_agreement_with_keras']:.4f}  accuracy {figures['test_accuracy']:.4f}")
    for name, ms in results["median_latency_ms_batch1"].items():
        print(f"{name:22s} {ms:8.3f} ms  ({results['speedup_vs_keras_call'][name]:.1f}x vs Keras call)")
    print(f"met: {results['met']}  -> {args.output}")


if __name__ == "__main__":
    main()
