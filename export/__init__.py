"""Deployment artefacts of a keras_team model or Team, each checked against Keras.

- `saved_model`: a SavedModel in TF Serving's layout ``base_dir/name/<version>/``;
- `serving_config`, `write_warmup`, `rest_request`, `grpc_request`,
  `classify_request`: TF Serving's ``models.config``, warmup records and
  requests (tensorflow-serving-api protos);
- `tflite`: a LiteRT file, float32, dynamic-range, float16 or int8, its
  labels beside it (`labels_path`);
- `metadata`: the record of versions, members, classes, cuts and input
  scaling a SavedModel carries (``assets.extra/keras_team.json``);
- `verify`: parity of every artefact with the Keras model, `export_report.json`.

One vocabulary names the formats everywhere (`FORMATS`): ``saved_model``,
``tflite`` (= ``tflite-float32``), ``tflite-dynamic``, ``tflite-float16``,
``tflite-int8`` (int8 input and output) and ``tflite-int8-float-io``. The
command line's ``--formats``, the config's ``export.formats`` and the labels
`verify` takes are these names; `tflite(quantization=q)` writes format
``tflite-q`` (``quantization="int8"`` is ``tflite-int8``, int8 I/O).

Signature and tensor names are described in `keras_team.export.signatures`.

Example:
    >>> import tempfile
    >>> from keras_team import export
    >>> model = keras_team.zoo.seed_cnn((8, 8, 1), 5, name="digits")
    >>> x = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1)).astype("uint8")
    >>> root = tempfile.mkdtemp()
    >>> version = export.saved_model(model, root, name="digits", input_dtype="uint8")
    >>> version.name
    '1'
    >>> litert_file = export.tflite(model, f"{root}/digits.tflite", input_dtype="uint8")
    >>> report = export.verify(model, {"saved_model": version, "tflite": litert_file}, x)
    >>> report["passed"], sorted(report["artefacts"]["saved_model"]["signatures"])
    (True, ['classify', 'digits', 'serving_default'])

Names load lazily, so the CLI's argument checks start without TensorFlow.
"""

from keras_team.extras import import_module

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
    "classify_request": "predict_requests",
    "tf_example": "predict_requests",
    "labels_path": "litert",
    "metadata": "metadata",
    "tflite": "litert",
    "tflite_files": "litert",
    "QUANTIZATIONS": "formats",
    "verify": "parity",
    "TOLERANCES": "parity",
    "FORMATS": "formats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"keras_team.export.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'keras_team.export' has no attribute {name!r}")
