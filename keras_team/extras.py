"""Optional dependencies: a missing one is a one-line error naming the extra that installs it.

The core library needs Keras, NumPy, TensorFlow and scikit-learn; the rest
comes with an extra of the `keras-team` package (`pyproject.toml`).

Example:
    >>> import_module("numpy").__name__
    'numpy'
    >>> str(MissingExtra("keras_tuner"))
    'keras_tuner is not installed: pip install "keras-team[tune]"'
"""

from __future__ import annotations

import importlib
import types

from keras_team.errors import KerasTeamError

# Top-level module -> the extra that installs it.
EXTRAS = {
    "keras_tuner": "tune",
    "matplotlib": "tune",  # the search's plot; [cli] brings [tune]
    "ai_edge_litert": "export",
    "tensorflow_serving": "export",
    "tensorflow_datasets": "tfds",
    "yaml": "cli",
    "pydantic": "cli",
}


class MissingExtra(KerasTeamError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, module: str):
        self.field, self.value, self.allowed = "extra", EXTRAS[module], f"{module} installed"
        Exception.__init__(self, f'{module} is not installed: pip install "keras-team[{EXTRAS[module]}]"')


def import_module(name: str) -> types.ModuleType:
    """`importlib.import_module(name)`; an optional dependency it lacks raises `MissingExtra`.

    Args:
        name: a module of keras-team or of an optional dependency, e.g.
            ``"keras_team.tuning.search"`` or ``"tensorflow_datasets"``.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        extra = missing(error)
        if extra is None:
            raise
        raise extra from error


def missing(error: ModuleNotFoundError) -> MissingExtra | None:
    """The `MissingExtra` that `error` means, or None when its module comes with no extra."""
    module = (error.name or "").partition(".")[0]
    if module not in EXTRAS:
        return None
    return MissingExtra(module)
