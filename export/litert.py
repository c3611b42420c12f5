"""LiteRT (TFLite) files: float32, dynamic-range, float16 or full-integer int8 (`keras_team.export.formats`).

The TFLite converter reads a SavedModel of the model's signatures (see
`keras_team.export.signatures`) and converts ``serving_default``: a file has
that one signature, with every member's logits under the SavedModel's
``inputs`` and output names, so `Interpreter.get_signature_runner()` needs
no name. The class names sit beside each file, one per line in class order,
in ``<file stem>.labels.txt`` (`labels_path`): TFLite metadata needs
tflite-support, whose last release (0.4.4, 2023) requires protobuf < 4 and
does not install beside TensorFlow 2.21. int8
is calibrated on a sample of the unaugmented training examples; its input
and output are int8 (``"int8"``) or float (``"int8-float-io"``), a raw
integer input such as uint8 pixels stays as it is.
Files run with the `ai-edge-litert` interpreter (`predict`).

Example:
    >>> path = tflite(model, f"{tmp}/digits.tflite", quantization="float16")
    >>> predict(path, x)["digits"].shape
    (25, 5)
    >>> labels_path(path).name
    'digits.labels.txt'
"""

from __future__ import annotations

import os
import pathlib
import re
import tempfile
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tensorflow.lite.python.convert_phase import ConverterError  # what `convert()` raises for a model it refuses

from keras_team.backend import require_tensorflow
from keras_team.errors import KerasTeamError
from keras_team.export.formats import QUANTIZATIONS
from keras_team.export.signatures import DEFAULT_SIGNATURE, class_names_of, input_spec, members, write_archive
from keras_team.files import TEMPORARY_PREFIX, is_out_of_space, write_bytes, write_text
CALIBRATION_EXAMPLES = 200
_UNSUPPORTED_OP = re.compile(r"'(?:tf|tfl)\.(\w+)' op is neither a custom op nor a flex op")


def tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    quantization: str = "float32",
    representative_data: np.ndarray | None = None,
    input_dtype: str | None = None,
    calibration_examples: int = CALIBRATION_EXAMPLES,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> pathlib.Path:
    """Convert `model` (a Team or one model) to a LiteRT file at `path`, written atomically, its labels beside it.

    Args:
        model: the Keras model or Team.
        path: the `.tflite` file to write.
        quantization: "float32" (none), "dynamic" (int8 weights), "float16"
            (float16 weights), "int8" (weights, activations, input and
            output) or "int8-float-io" (float input and output): the format
            ``tflite-<quantization>`` of `keras-team export`.
        representative_data: raw, unaugmented training examples (int8 only);
            a seeded sample of `calibration_examples` of them calibrates it.
        input_dtype: dtype of the raw examples (e.g. "uint8"); default the model input's.
        calibration_examples: how many examples calibrate int8.
        seed: seeds the calibration sample.
        class_names: one per class, written to `labels_path(path)`; default "0", "1", ...

    Returns:
        `path`.

    Example:
        >>> tflite(model, f"{tmp}/digits-int8.tflite", quantization="int8",
        ...        representative_data=task.splits["train"][0]).name
        'digits-int8.tflite'
    """
    return tflite_files(model, {path: quantization}, representative_data=representative_data,
                        input_dtype=input_dtype, calibration_examples=calibration_examples, seed=seed,
                        class_names=class_names)[0]


def tflite_files(
    model: keras.Model,
    files: Mapping[str | os.PathLike, str],
    *,
    representative_data: np.ndarray | None = None,
    input_dtype: str | None = None,
    calibration_examples: int = CALIBRATION_EXAMPLES,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    failed: dict | None = None,
) -> list[pathlib.Path]:
    """Several LiteRT files of one model: path -> quantization, arguments as `tflite`.

    The model is traced and saved once for all of them (in a temporary
    folder next to the first file). Given a `failed` dict, a file that
    cannot be made (a converter error, unusable calibration data, a full
    disk) is left out and its `KerasTeamError` stored there by path; the
    others are made.

    Example:
        >>> [path.name for path in tflite_files(model, {f"{tmp}/m.tflite": "float32", f"{tmp}/m-int8.tflite": "int8"},
        ...                                     representative_data=x_train)]
        ['m.tflite', 'm-int8.tflite']
    """
    require_tensorflow("LiteRT export")
    for quantization in files.values():
        if quantization not in QUANTIZATIONS:
            raise KerasTeamError("quantization", quantization, f"one of {', '.join(QUANTIZATIONS)}")
    spec = input_spec(model, input_dtype)
    labels = "".join(f"{name}\n" for name in class_names_of(model, class_names))
    sample = None
    if any(quantization.startswith("int8") for quantization in files.values()):
        try:
            sample = _calibration_sample(representative_data, spec, calibration_examples, seed)
        except KerasTeamError as error:
            if failed is None:
                raise
            failed.update({path: error for path, quantization in files.items() if quantization.startswith("int8")})
    keys = list(members(model))
    written = []
    folder = pathlib.Path(next(iter(files))).parent
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=TEMPORARY_PREFIX, dir=folder) as tmp:
        write_archive(model, tmp, spec, classes=False)
        for path, quantization in files.items():
            if failed is not None and path in failed:
                continue
            try:
                flatbuffer = _convert(tmp, [DEFAULT_SIGNATURE], quantization, sample)
            except ConverterError as error:
                if failed is None:
                    raise _conversion_error(tmp, keys, error) from error
                failed[path] = _conversion_error(tmp, keys, error)
                continue
            try:
                write_bytes(path, flatbuffer)
                write_text(labels_path(path), labels)
            except OSError as error:
                if failed is None or not is_out_of_space(error):
                    raise
                failed[path] = KerasTeamError("disk", error.strerror, f"room for {pathlib.Path(path).name} "
                                              "(free some space, or write the export to another disk)")
                continue
            written.append(pathlib.Path(path))
    return written


def labels_path(path: str | os.PathLike) -> pathlib.Path:
    """The labels file beside a LiteRT file: ``team.int8.tflite`` -> ``team.int8.labels.txt``.

    Example:
        >>> labels_path("litert/team.int8.tflite")
        PosixPath('litert/team.int8.labels.txt')
    """
    return pathlib.Path(path).with_suffix(".labels.txt")


def _calibration_sample(data, spec: tf.TensorSpec, count: int, seed: int) -> np.ndarray:
    if data is None or len(data) == 0:
        raise KerasTeamError("representative_data", None, "unaugmented training examples to calibrate int8")
    data = np.asarray(data)
    if tuple(data.shape[1:]) != tuple(spec.shape[1:]):
        raise KerasTeamError("representative_data", f"shape {data.shape}", f"examples shaped {tuple(spec.shape[1:])}")
    if count < 1:
        raise KerasTeamError("calibration_examples", count, "a positive number of examples to calibrate int8")
    chosen = np.random.default_rng(seed).permutation(len(data))[:count]
    sample = data[np.sort(chosen)]
    if np.issubdtype(sample.dtype, np.floating) and not np.isfinite(sample).all():
        bad = int(np.sum(~np.isfinite(sample).reshape(len(sample), -1).all(axis=1)))
        raise KerasTeamError("representative_data", f"{bad} of {len(sample)} examples with NaN/inf values",
                             "finite examples (int8 calibrated on them has no valid range)")
    return sample.astype(spec.dtype.as_numpy_dtype)


def _convert(saved_model_dir: str, keys: list[str], quantization: str, sample) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=keys)
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization.startswith("int8"):
        def calibration():
            for key in keys:
                for example in sample:
                    yield key, {"inputs": example[np.newaxis]}

        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if quantization == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def _conversion_error(saved_model_dir: str, keys: list[str], error: ConverterError) -> KerasTeamError:
    """A one-line error naming the member (of `keys`, converted alone) and the op TFLite lacks, else the converter's message."""
    ops = sorted(set(_UNSUPPORTED_OP.findall(str(error))))
    if not ops:  # the converter's whole message, on one line
        said = "; ".join(dict.fromkeys(line.strip() for line in str(error).splitlines() if line.strip()))
        return KerasTeamError("model", "not convertible", f"a model the TFLite converter accepts ({said})")
    failing = [key for key in keys if _fails_alone(saved_model_dir, key)] if len(keys) > 1 else keys
    return KerasTeamError(f"member {', '.join(failing) or ', '.join(keys)}", f"op {', '.join(ops)}",
                          "only ops with a TFLite builtin kernel (https://ai.google.dev/edge/litert/models/ops_compatibility)")


def _fails_alone(saved_model_dir: str, key: str) -> bool:
    try:
        _convert(saved_model_dir, [key], "float32", None)
    except ConverterError:
        return True
    return False


def interpreter(path: str | os.PathLike) -> Interpreter:
    """The LiteRT interpreter the package checks a file with: TFLite's builtin kernels, without the default
    XNNPACK delegate (whose creation prints an INFO line on stderr that no Python option silences).

    Example:
        >>> interpreter(tflite(model, f"{tmp}/digits.tflite")).get_signature_list()
        {'serving_default': {'inputs': ['inputs'], 'outputs': ['digits']}}
    """
    return Interpreter(model_path=str(path),
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def predict(path: str | os.PathLike, examples: np.ndarray, signature: str | None = None,
            *, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Run a signature of a LiteRT file (None: its only one) with the ai-edge-litert interpreter; float32 outputs.

    Inputs are cast (or quantized, for int8 inputs) to the file's input type;
    int8 outputs are dequantized.

    Example:
        >>> path = tflite(model, f"{tmp}/digits.tflite")
        >>> predict(path, x)["digits"].shape
        (25, 5)
    """
    runner = interpreter(path).get_signature_runner(signature)
    (name, detail), = runner.get_input_details().items()
    outputs = runner.get_output_details()
    results: dict[str, list[np.ndarray]] = {key: [] for key in outputs}
    examples = np.asarray(examples)
    for start in range(0, len(examples), batch_size):
        batch = _to_tensor(examples[start:start + batch_size], detail)
        for key, value in runner(**{name: batch}).items():
            results[key].append(_from_tensor(value, outputs[key]))
    return {key: np.concatenate(parts) for key, parts in results.items()}


def _to_tensor(batch: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if scale and np.issubdtype(detail["dtype"], np.integer):
        info = np.iinfo(detail["dtype"])
        batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
    return batch.astype(detail["dtype"])


def _from_tensor(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if scale and np.issubdtype(value.dtype, np.integer):
        return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return value.astype(np.float32)
