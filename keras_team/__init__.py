"""keras-team: transfer learning as a team of Keras models.

Cut a trained leader after its first N weighted layers, freeze the copy, put
a new head on it, add followers that read the leader's outputs, and train the
team as one Keras model.

Example:
    >>> import keras_team
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
    >>> model = keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(5))

Names are imported lazily so that `keras_team.app.config` and the CLI's argument
checks start without loading TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "cut_points": "keras_team.cuts",
    "CutPoint": "keras_team.cuts",
    "transfer": "keras_team.transfers",
    "body": "keras_team.transfers",
    "Transferred": "keras_team.transfers",
    "freeze": "keras_team.freezing",
    "unfreeze": "keras_team.freezing",
    "Follower": "keras_team.followers",
    "Distill": "keras_team.followers",
    "Team": "keras_team.team",
    "KerasTeamError": "keras_team.errors",
}
_MODULES = ("heads", "zoo", "data", "errors", "caching", "distribute")

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"keras_team.{name}")
    raise AttributeError(f"module 'keras_team' has no attribute {name!r}")
