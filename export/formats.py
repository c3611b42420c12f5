"""The export formats, by name: one vocabulary for `keras-team export --formats`, the config's
``export.formats``, the labels `verify` takes and `tflite(quantization=...)`.

A LiteRT format is ``tflite-<quantization>``; ``tflite`` alone is ``tflite-float32``:

- ``float32``: no quantization;
- ``dynamic``: int8 weights, float activations;
- ``float16``: float16 weights;
- ``int8``: int8 weights and activations, calibrated on training examples, and
  int8 input and output tensors (a raw integer input such as uint8 pixels stays as it is);
- ``int8-float-io``: the same with float input and output tensors.

This module imports no TensorFlow, so configs and the CLI check names at once.

Example:
    >>> FORMATS["tflite-int8"], FORMATS["tflite"]
    ('int8', 'float32')
"""

from __future__ import annotations

from collections.abc import Sequence

from keras_team.errors import KerasTeamError

QUANTIZATIONS = ("float32", "dynamic", "float16", "int8", "int8-float-io")
ALIASES = {"tflite": "tflite-float32"}
# Format -> the quantization of its LiteRT file; None for the SavedModel.
FORMATS = {"saved_model": None, "tflite": "float32", **{f"tflite-{q}": q for q in QUANTIZATIONS}}


def check_formats(formats: Sequence[str]) -> list[str]:
    """The formats, each once, in order; "tflite" means "tflite-float32".

    Example:
        >>> check_formats(["saved_model", "tflite", "tflite-float32"])
        ['saved_model', 'tflite-float32']
    """
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise KerasTeamError("formats", ",".join(unknown) or "", f"a comma-separated list of: {', '.join(FORMATS)}")
    return list(dict.fromkeys(ALIASES.get(fmt, fmt) for fmt in formats))
