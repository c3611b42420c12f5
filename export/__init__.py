"""Deployment artefacts of a keras_team model or Team, each checked against Keras.

- `saved_model`: a SavedModel in TF Serving's layout ``base_dir/name/<version>/``;
- `serving_config`, `write_warmup`, `rest_request`, `grpc_request`: TF Serving's
  ``models.config``, warmup records and requests (tensorflow-serving-api protos);
- `tflite`: a LiteRT file, float32, dynamic-range, float16 or int8;
- `verify`: parity of every artefact with the Keras model, `export_report.json`;
- `export_model`: all of these for one model, as `keras-team export` runs them.

Signature and tensor names are described in `keras_team.export.signatures`.

Example:
    >>> from keras_team import export
    >>> export.QUANTIZATIONS
    ('float32', 'dynamic', 'float16', 'int8')

Names load lazily, so the CLI's argument checks start without TensorFlow.
"""

import importlib

_EXPORTS = {
    "INPUT": "signatures",
    "DEFAULT_SIGNATURE": "signatures",
    "members": "signatures",
    "saved_model": "savedmodel",
    "versions": "savedmodel",
    "serving_config": "serving",
    "write_warmup": "predict_requests",
    "rest_request": "predict_requests",
    "grpc_request": "predict_requests",
    "tflite": "litert",
    "QUANTIZATIONS": "litert",
    "verify": "parity",
    "TOLERANCES": "parity",
    "export_model": "stage",
    "FORMATS": "stage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"keras_team.export.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'keras_team.export' has no attribute {name!r}")
