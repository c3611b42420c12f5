"""The Keras backend in use, and the one-line refusal of what needs TensorFlow.

The core (cuts, transfer, the Team, the tap and feature caches, the tuner's
trials, `keras_team.predict`) runs on every Keras backend. SavedModel and TF
Serving files, LiteRT conversion and `tf.distribute` strategies need the
TensorFlow backend; on another one they raise `KerasTeamError` at once.

Example:
    >>> is_tensorflow()
    True
    >>> require_tensorflow("SavedModel export")   # nothing on TensorFlow
"""

import keras

from keras_team.errors import KerasTeamError


def is_tensorflow() -> bool:
    """Whether Keras runs on the TensorFlow backend."""
    return keras.backend.backend() == "tensorflow"


def require_tensorflow(feature: str) -> None:
    """Raise a one-line `KerasTeamError` naming `feature` unless Keras runs on TensorFlow.

    Args:
        feature: what needs TensorFlow, e.g. ``"LiteRT export"``.
    """
    if not is_tensorflow():
        raise KerasTeamError("KERAS_BACKEND", keras.backend.backend(),
                             f"tensorflow for {feature} (set KERAS_BACKEND=tensorflow before Keras is imported)")
