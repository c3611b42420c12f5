"""The export formats, by name: what `keras-team export --formats` and the config's ``export.formats`` take.

This module imports no TensorFlow, so configs and the CLI check names at once.

Example:
    >>> FORMATS["tflite-int8"]
    ('int8', 'int8')
"""

from __future__ import annotations

from collections.abc import Sequence

from keras_team.errors import KerasTeamError

# Format -> (quantization, int8 I/O) of its LiteRT file; None for the SavedModel.
FORMATS = {
    "saved_model": None,
    "tflite": ("float32", "float"),
    "tflite-float32": ("float32", "float"),
    "tflite-dynamic": ("dynamic", "float"),
    "tflite-float16": ("float16", "float"),
    "tflite-int8": ("int8", "int8"),
    "tflite-int8-float-io": ("int8", "float"),
}


def check_formats(formats: Sequence[str]) -> list[str]:
    """The formats, each once, in order; "tflite" means "tflite-float32".

    Example:
        >>> check_formats(["saved_model", "tflite", "tflite-float32"])
        ['saved_model', 'tflite-float32']
    """
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise KerasTeamError("formats", ",".join(unknown) or "", f"a comma-separated list of: {', '.join(FORMATS)}")
    return list(dict.fromkeys("tflite-float32" if fmt == "tflite" else fmt for fmt in formats))
