"""keras-team: transfer learning as a team of Keras models.

Cut a trained leader after its first N weighted layers, freeze the copy, put
a new head on it, add followers that read the leader's outputs, and train the
team as one Keras model.

Example:
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
    >>> model = keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(5))
    >>> model.output_shape
    (None, 5)

`import keras_team` registers the package's models and layers with Keras, as
keras-hub does, so `keras.models.load_model("team.keras")` reads a saved
team, transferred model or follower right after it; the rest of the library
loads on the first use of a name (PEP 562). The `keras-team` console script
(`keras_team_cli`) leaves the registration, and with it Keras and
TensorFlow, to the commands that need them.
"""

import importlib
import os

__version__ = "0.1.0"

# Public name -> the module that defines it (Keras' `keras_export` habit: the API is listed, internals are not).
_NAMES = {
    "CutPoint": "keras_team.cuts",
    "cut_points": "keras_team.cuts",
    "Distill": "keras_team.followers",
    "Follower": "keras_team.followers",
    "KerasTeamError": "keras_team.errors",
    "Team": "keras_team.team",
    "Transferred": "keras_team.transfers",
    "body": "keras_team.transfers",
    "transfer": "keras_team.transfers",
    "freeze": "keras_team.freezing",
    "unfreeze": "keras_team.freezing",
    "to_unfreeze": "keras_team.freezing",
    "load_model": "keras_team.files",
    "predict": "keras_team.predictions",
    "Prediction": "keras_team.predictions",
    "rank_cuts": "keras_team.transferability",
    "CutScore": "keras_team.transferability",
}
_PUBLIC_MODULES = ("caching", "data", "distribute", "export", "files", "heads", "probe", "tuning", "zoo")

__all__ = sorted([*_NAMES, *_PUBLIC_MODULES])


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _PUBLIC_MODULES:
        value = importlib.import_module(f"keras_team.{name}")
    else:
        raise AttributeError(f"module 'keras_team' has no attribute {name!r}")
    if name != "KerasTeamError":
        register()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


# Set by the console script while it imports the package (`keras_team_cli`).
DEFER_REGISTRATION = "_KERAS_TEAM_DEFER_REGISTRATION"


def register() -> None:
    """Register every serialisable class of the package with Keras (importing Keras)."""
    importlib.import_module("keras_team.team")  # its imports define (and register) every layer and model


if not os.environ.get(DEFER_REGISTRATION):
    register()
