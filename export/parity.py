"""Parity of exported artefacts with the Keras model they came from.

`verify` runs the Keras model (``training=False``), each reloaded
SavedModel (through every signature) and each LiteRT file (through every
signature) on the same held-out examples, and reports per artefact,
signature and output: the largest absolute difference from Keras (of the
logits; of the probabilities and scores, from the softmaxes of the Keras
logits, weighted as the export's ensemble), the top-1 agreement with Keras
and, with labels, the accuracy. Each
artefact is held to the tolerance of its format (`TOLERANCES`, for logits of
classifiers: an absolute bound for float32, a fraction of the Keras logits'
range on the examples checked for float16, dynamic range and int8);
the report is written as JSON, then any miss raises `KerasTeamError`
naming the artefact, the output and the figure.

Example:
    >>> from keras_team.export import saved_model, tflite
    >>> version = saved_model(model, f"{tmp}/exports", name="digits", input_dtype="uint8")
    >>> dynamic = tflite(model, f"{tmp}/digits-dynamic.tflite", quantization="dynamic")
    >>> report = verify(model, {"saved_model": version, "tflite-dynamic": dynamic},
    ...                 xv, yv, report_path=f"{tmp}/export_report.json")
    >>> report["passed"]
    True
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from keras_team.errors import ExportFailed, KerasTeamError
from keras_team.files import write_text
from keras_team.export import litert
from keras_team.export.formats import ALIASES
from keras_team.export.predict_requests import tf_example
from keras_team.export.signatures import (DEFAULT_SIGNATURE, PROBABILITIES, SCORES, TOP_K, TOP_SCORES, ensemble_shares,
                                          members)

# Format -> the most a logit may differ from Keras, and the least top-1 agreement. Lossless
# formats: an absolute difference (`max_abs_diff`), float rounding. Quantized formats: a
# fraction of the Keras logits' range on the examples checked (`max_range_diff`), since
# quantization error scales with the values quantized. The fractions follow from the
# formats, not from any data: float16 weights keep about 3 significant digits (1%); int8
# weights alone (dynamic range) cost up to half of one of 255 steps per weight, per layer
# (5%); int8 activations too add one such step per layer's output (10%).
TOLERANCES = {
    "saved_model": {"max_abs_diff": 1e-3, "top1_agreement": 1.0},  # float32 rounding through a real backbone: ~1e-4
    "tflite-float32": {"max_abs_diff": 1e-3, "top1_agreement": 0.99},
    "tflite-float16": {"max_range_diff": 0.01, "top1_agreement": 0.98},
    "tflite-dynamic": {"max_range_diff": 0.05, "top1_agreement": 0.97},
    "tflite-int8": {"max_range_diff": 0.1, "top1_agreement": 0.95},
}
SMALLEST_RANGE = 1e-12  # logits that do not vary (an untrained model): any difference is a large fraction


def tolerance_for(label: str, tolerances: Mapping[str, Mapping[str, float]] = TOLERANCES) -> dict[str, float]:
    """The tolerance of an artefact label: the longest format name it starts with ("tflite" is "tflite-float32").

    Example:
        >>> tolerance_for("tflite-int8-float-io")["top1_agreement"], tolerance_for("tflite")["max_abs_diff"]
        (0.95, 0.001)
    """
    label = ALIASES.get(label, label)
    matches = [fmt for fmt in tolerances if label == fmt or label.startswith(f"{fmt}-")]
    if not matches:
        raise KerasTeamError("artefact", label, f"a label starting with a format: {', '.join(tolerances)}")
    return dict(tolerances[max(matches, key=len)])


def keras_outputs(model: keras.Model, examples: np.ndarray, *, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Output name -> float32 logits of `model` in inference mode (a single model's output is named after it).

    Example:
        >>> keras_outputs(model, x)["digits"].shape
        (25, 5)
    """
    outputs = [o for owned in members(model).values() for o in owned]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, len(examples), batch_size):
        batch = keras.ops.convert_to_tensor(np.asarray(examples[start:start + batch_size]), model.inputs[0].dtype)
        result = model(batch, training=False)
        result = result if isinstance(result, dict) else {outputs[0]: result}
        for name in outputs:
            parts[name].append(keras.ops.convert_to_numpy(result[name]).astype(np.float32))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def saved_model_outputs(path: str | os.PathLike, examples: np.ndarray, *, batch_size: int = 256) -> dict[str, dict[str, np.ndarray]]:
    """Signature -> output name -> float outputs (logits, probabilities, scores) of every signature of a reloaded SavedModel.

    A signature taking strings (``classify``) gets the examples as serialized
    `tf.train.Example`s, as TF Serving builds them from a `ClassificationRequest`.

    Example:
        >>> from keras_team.export import saved_model
        >>> version = saved_model(model, f"{tmp}/exports", name="digits", input_dtype="uint8")
        >>> saved_model_outputs(version, x)["serving_default"]["digits"].shape
        (25, 5)
    """
    loaded = tf.saved_model.load(str(path))
    results = {}
    for key, function in loaded.signatures.items():
        (spec,) = function.structured_input_signature[1].values()
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(examples), batch_size):
            batch = np.asarray(examples[start:start + batch_size])
            if spec.dtype == tf.string:
                batch = [tf_example(example).SerializeToString() for example in batch]
            else:
                batch = batch.astype(spec.dtype.as_numpy_dtype)
            for name, value in function(**{spec.name: tf.constant(batch)}).items():
                if value.dtype.is_floating:
                    parts.setdefault(name, []).append(value.numpy().astype(np.float32))
        results[key] = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    return results


def tflite_outputs(path: str | os.PathLike, examples: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Signature -> output name -> logits, running every signature of a LiteRT file.

    Example:
        >>> path = litert.tflite(model, f"{tmp}/digits.tflite")
        >>> tflite_outputs(path, x)["serving_default"]["digits"].shape
        (25, 5)
    """
    keys = litert.interpreter(path).get_signature_list()
    return {key: litert.predict(path, examples, key) for key in keys}


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """Max absolute difference, its fraction of the reference's logit range, top-1 agreement and (with labels) accuracy.

    Example:
        >>> compare(np.array([[1.0, 0.0]]), np.array([[0.5, 0.0]]), np.array([0]))
        {'max_abs_diff': 0.5, 'logit_range': 1.0, 'max_range_diff': 0.5, 'top1_agreement': 1.0, 'accuracy': 1.0}
    """
    if reference.shape != candidate.shape:
        raise KerasTeamError("artefact output", f"shape {candidate.shape}", f"the Keras output's shape {reference.shape}")
    difference = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    spread = float(np.ptp(reference)) if reference.size else 0.0
    figures = {
        "max_abs_diff": difference,
        "logit_range": spread,
        "max_range_diff": difference / max(spread, SMALLEST_RANGE),
        "top1_agreement": float(np.mean(reference.argmax(-1) == candidate.argmax(-1))),
    }
    if labels is not None:
        figures["accuracy"] = float(np.mean(candidate.argmax(-1) == labels))
    return figures


def _misses(figures: Mapping[str, float], tolerance: Mapping[str, float]) -> list[str]:
    """The figures of `compare` outside `tolerance`: each bound the tolerance holds is checked."""
    misses = [f"{key}={figures[key]:.4g} > {tolerance[key]:g}"
              for key in ("max_abs_diff", "max_range_diff") if key in tolerance and figures[key] > tolerance[key]]
    if figures["top1_agreement"] < tolerance["top1_agreement"]:
        misses.append(f"top1_agreement={figures['top1_agreement']:.4f} < {tolerance['top1_agreement']:g}")
    return misses


def verify(
    model: keras.Model,
    artefacts: Mapping[str, str | os.PathLike],
    examples: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    tolerances: Mapping[str, Mapping[str, float]] | None = None,
    report_path: str | os.PathLike | None = None,
    weights: Mapping[str, float] | None = None,
) -> dict:
    """Check each artefact against `model` on held-out `examples`; raise on a missed tolerance.

    Args:
        model: the Keras model or Team the artefacts were exported from.
        artefacts: label -> path; a label starts with its format, a name of
            `keras_team.export.FORMATS` ("saved_model", "tflite",
            "tflite-int8", "tflite-int8-float-io", ...); a SavedModel is its
            version directory.
        examples: held-out raw examples (as the data holds them, e.g. uint8).
        labels: their labels, for per-artefact accuracy on them.
        tolerances: per format overrides of `TOLERANCES` (merged by key).
        report_path: where to write the report as JSON (atomically) before any raise.
        weights: the ensemble weights the SavedModel was exported with
            (default equal): its probabilities and scores are checked against
            the Keras logits' softmaxes weighted so.

    Returns:
        The report: Keras accuracies, and per artefact its path, format,
        size, tolerance, figures per signature and output, misses and `passed`.

    Example:
        >>> path = litert.tflite(model, f"{tmp}/digits.tflite")
        >>> verify(model, {"tflite-float32": path}, x, y)["passed"]
        True
    """
    report = parity_report(model, artefacts, examples, labels, tolerances=tolerances, weights=weights)
    if report_path is not None:
        write_text(pathlib.Path(report_path), json.dumps(report, indent=2) + "\n")
    raise_misses(report)
    return report


def parity_report(
    model: keras.Model,
    artefacts: Mapping[str, str | os.PathLike],
    examples: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    tolerances: Mapping[str, Mapping[str, float]] | None = None,
    weights: Mapping[str, float] | None = None,
) -> dict:
    """The report of `verify`, without writing it or raising on a miss.

    Example:
        >>> path = litert.tflite(model, f"{tmp}/digits.tflite", input_dtype="uint8")
        >>> parity_report(model, {"tflite": path}, x)["passed"]
        True
    """
    limits = {**TOLERANCES, **{fmt: {**TOLERANCES.get(fmt, {}), **tol} for fmt, tol in (tolerances or {}).items()}}
    examples = np.asarray(examples)
    reference = keras_outputs(model, examples)
    report: dict = {"examples": int(len(examples)), "keras": {}, "artefacts": {}}
    if labels is not None:
        labels = np.asarray(labels)
        report["keras"] = {name: {"accuracy": float(np.mean(out.argmax(-1) == labels))} for name, out in reference.items()}
    for label, path in artefacts.items():
        tolerance = tolerance_for(label, limits)
        path = pathlib.Path(path)
        if not path.exists():
            raise KerasTeamError(f"artefacts[{label}]", str(path), "an exported SavedModel directory or .tflite file")
        is_saved_model = path.is_dir()
        if is_saved_model != label.startswith("saved_model"):
            raise KerasTeamError(f"artefacts[{label}]", str(path), f"a {'SavedModel directory' if label.startswith('saved_model') else '.tflite file'}")
        outputs = saved_model_outputs(path, examples) if is_saved_model else tflite_outputs(path, examples)
        signatures = {}
        expected = [DEFAULT_SIGNATURE, *(members(model) if is_saved_model else [])]
        misses = [f"{key}: signature missing" for key in expected if key not in outputs]
        for signature, values in outputs.items():
            signatures[signature] = {}
            for name, value in values.items():
                expected_value = _expected(model, reference, signature, name, weights)
                if expected_value is None:
                    raise KerasTeamError(f"artefacts[{label}]", f"output {name!r}", f"outputs of the model: {', '.join(reference)}")
                figures = compare(expected_value, value, None if name == TOP_SCORES else labels)
                signatures[signature][name] = figures
                misses += [f"{signature}/{name}: {miss}" for miss in _misses(figures, tolerance)]
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if is_saved_model else path.stat().st_size
        report["artefacts"][label] = {"path": str(path), "size_bytes": size, "tolerance": tolerance,
                                      "signatures": signatures, "misses": misses, "passed": not misses}
    report["passed"] = all(entry["passed"] for entry in report["artefacts"].values())
    return report


def _expected(model: keras.Model, reference: dict[str, np.ndarray], signature: str, name: str,
              weights: Mapping[str, float] | None) -> np.ndarray | None:
    """What output `name` of `signature` should hold, from the Keras logits; None for an output the model has not."""
    if name in reference:
        return reference[name]
    if name not in (PROBABILITIES, SCORES, TOP_SCORES):
        return None
    owned = members(model)
    outputs = [o for outs in owned.values() for o in outs] if signature not in owned else owned[signature]
    shares = ensemble_shares(outputs, weights if signature not in owned else None)
    probabilities = sum(share * _softmax(reference[output]) for output, share in shares.items())
    if name == TOP_SCORES:
        return -np.sort(-probabilities, axis=-1)[:, :TOP_K]
    return probabilities


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# A quantized format that missed its tolerance -> what to try instead (the first format the label starts with).
ADVICE = {
    "tflite-int8": "more or other representative data (keras-team export --calibration-examples, or more training "
                   "examples), or a milder format: tflite-dynamic or tflite-float16",
    "tflite-dynamic": "a milder format: tflite-float16 or tflite (float32)",
    "tflite-float16": "tflite (float32)",
}


def raise_misses(report: dict) -> None:
    """Raise `ExportFailed` for the first artefact of `report` that missed its tolerance, saying what to try.

    Example:
        >>> raise_misses({"artefacts": {}})
        >>> raise_misses({"artefacts": {"tflite-int8": {"misses": ["top1_agreement=0.9300 < 0.95"],
        ...                                             "tolerance": {"top1_agreement": 0.95}}}})
        Traceback (most recent call last):
        ...
        keras_team.errors.ExportFailed: artefact tflite-int8='top1_agreement=0.9300 < 0.95' is not valid: expected within its tolerance {'top1_agreement': 0.95} (figures in the export report; try more or other representative data (keras-team export --calibration-examples, or more training examples), or a milder format: tflite-dynamic or tflite-float16)
    """
    for label, entry in report["artefacts"].items():
        if entry["misses"]:
            advice = next((f"; try {tip}" for fmt, tip in ADVICE.items() if ALIASES.get(label, label).startswith(fmt)), "")
            raise ExportFailed(f"artefact {label}", "; ".join(entry["misses"][:3]),
                               f"within its tolerance {entry['tolerance']} (figures in the export report{advice})")
