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

import os
import sys


def _quiet_start_for_the_cli() -> None:
    """Started as the `keras-team` command (not `--verbose`): import TensorFlow without its start-up noise.

    The command prints no TensorFlow log lines unless asked; those lines are
    written when TensorFlow is first imported, which the eager imports below
    do, so the command's quiet start happens here.
    """
    command = os.path.basename(sys.argv[0]) == "keras-team" or sys.argv[0] == "-m"  # -m: keras_team.app.cli
    if not command or "--verbose" in sys.argv or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_quiet_start_for_the_cli()

from keras_team import caching, cuts, data, distribute, errors, followers, freezing, graph, heads, layers, taps, team, transfers, zoo
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
    "distribute",
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
