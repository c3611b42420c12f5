"""Requests to TF Serving, built with tensorflow-serving-api's protos.

- `rest_request`: the JSON body of a REST ``:predict`` call;
- `grpc_request`: a `PredictRequest` for ``PredictionService/Predict``;
- `classify_request`: a `ClassificationRequest` for ``PredictionService/Classify``
  (the ``classify`` signature), each example a `tf.train.Example` (`tf_example`);
- `write_warmup`: ``assets.extra/tf_serving_warmup_requests``, `PredictionLog`
  records that TF Serving replays before it marks a version available.

Example:
    >>> rest_request(np.zeros((1, 2), np.uint8))
    {'signature_name': 'serving_default', 'instances': [[0, 0]]}
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

from keras_team.errors import KerasTeamError
from keras_team.files import atomic_path
from keras_team.export.signatures import CLASSIFY_SIGNATURE, DEFAULT_SIGNATURE, INPUT

WARMUP_FILE = pathlib.Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many


def grpc_request(
    examples: np.ndarray, *, name: str, signature_name: str = DEFAULT_SIGNATURE,
    version: int | None = None, dtype: str | None = None,
) -> predict_pb2.PredictRequest:
    """A gRPC `PredictRequest` for `examples` (a batch), addressed to model `name`.

    Example:
        >>> request = grpc_request(np.zeros((1, 2), np.uint8), name="digits")
        >>> request.inputs["inputs"].dtype == tf.uint8.as_datatype_enum
        True
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[INPUT].CopyFrom(tf.make_tensor_proto(np.asarray(examples, dtype=dtype)))
    return request


def tf_example(example: np.ndarray) -> tf.train.Example:
    """One example as the ``classify`` signature parses it: feature ``inputs``, its values flattened (int64 or float).

    Example:
        >>> tf_example(np.array([[1, 2], [3, 4]], np.uint8)).features.feature["inputs"].int64_list.value
        [1, 2, 3, 4]
    """
    values = np.asarray(example).reshape(-1)
    if np.issubdtype(values.dtype, np.integer):
        feature = tf.train.Feature(int64_list=tf.train.Int64List(value=values.astype(np.int64)))
    else:
        feature = tf.train.Feature(float_list=tf.train.FloatList(value=values.astype(np.float32)))
    return tf.train.Example(features=tf.train.Features(feature={INPUT: feature}))


def classify_request(
    examples: np.ndarray, *, name: str, signature_name: str = CLASSIFY_SIGNATURE, version: int | None = None,
) -> classification_pb2.ClassificationRequest:
    """A gRPC `ClassificationRequest` for `examples` (a batch): TF Serving parses each `tf.train.Example`
    with the ``classify`` signature and answers every class name with its score.

    Example:
        >>> request = classify_request(np.zeros((2, 3), np.uint8), name="digits")
        >>> request.model_spec.signature_name, len(request.input.example_list.examples)
        ('classify', 2)
    """
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    request.input.example_list.examples.extend(tf_example(example) for example in np.asarray(examples))
    return request


def rest_request(examples: np.ndarray, *, signature_name: str = DEFAULT_SIGNATURE) -> dict:
    """The JSON body of a REST ``POST /v1/models/<name>:predict`` for `examples` (row format).

    Example:
        >>> rest_request(np.ones((2, 1), np.uint8), signature_name="leader")["instances"]
        [[1], [1]]
    """
    return {"signature_name": signature_name, "instances": np.asarray(examples).tolist()}


def write_warmup(
    version_dir: str | os.PathLike, examples: np.ndarray, *, name: str, dtype: str | None = None,
    signature_name: str = DEFAULT_SIGNATURE,
) -> pathlib.Path:
    """Write one warmup `PredictionLog` per example into `version_dir/assets.extra/`.

    Example:
        >>> write_warmup(tmp, x[:10], name="digits").name
        'tf_serving_warmup_requests'
    """
    examples = np.asarray(examples)
    if not 1 <= len(examples) <= MAX_WARMUP_RECORDS:
        raise KerasTeamError("warmup", f"{len(examples)} examples", f"1 to {MAX_WARMUP_RECORDS} examples")
    path = pathlib.Path(version_dir) / WARMUP_FILE
    with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for example in examples:
            request = grpc_request(example[np.newaxis], name=name, signature_name=signature_name, dtype=dtype)
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path
