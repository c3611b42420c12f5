"""keras-team: transfer learning as a team of Keras models.

Cut a trained leader after its first N weighted layers, freeze the copy, put
a new head on it, add followers that read the leader's outputs, and train the
team as one Keras model.

Example:
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
    >>> model = keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(5))
    >>> model.output_shape
    (None, 5)

The library modules are imported eagerly (as keras-hub does), so that
`import keras_team` registers every serialisable class and
`keras.models.load_model("team.keras")` works without `custom_objects`.
"""

import os as _os
import sys as _sys

if "tensorflow" not in _sys.modules and _os.environ.get("TF_CPP_MIN_LOG_LEVEL") not in ("0", "1"):
    # TensorFlow's C++ start-up lines (oneDNN, CUDA stubs, CPU features) are written by absl before
    # TF_CPP_MIN_LOG_LEVEL is read, so TensorFlow is imported with file descriptor 2 on /dev/null
    # (TF_CPP_MIN_LOG_LEVEL=0 shows them). Python errors still propagate.
    _saved, _devnull = _os.dup(2), _os.open(_os.devnull, _os.O_WRONLY)
    try:
        _sys.stderr.flush()
        _os.dup2(_devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        _os.dup2(_saved, 2)
        _os.close(_saved)
        _os.close(_devnull)

from keras_team import caching, cuts, data, errors, followers, freezing, graph, heads, layers, taps, team, transfers, zoo
from keras_team.cuts import CutPoint, cut_points
from keras_team.errors import KerasTeamError
from keras_team.followers import Distill, Follower
from keras_team.freezing import freeze, unfreeze
from keras_team.team import Team
from keras_team.transfers import Transferred, body, transfer

__version__ = "0.1.0"

__all__ = [
    "CutPoint",
    "Distill",
    "Follower",
    "KerasTeamError",
    "Team",
    "Transferred",
    "body",
    "caching",
    "cut_points",
    "cuts",
    "data",
    "errors",
    "followers",
    "freeze",
    "freezing",
    "graph",
    "heads",
    "layers",
    "taps",
    "team",
    "transfer",
    "transfers",
    "unfreeze",
    "zoo",
]
