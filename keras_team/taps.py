"""Taps: the leader outputs a follower reads.

`features` is the input of the leader's output layer (the cut, for a model
made by `transfer`), `logits` its output (before a trailing softmax), `probs`
the softmax of the logits at a temperature (applied by the follower), and any
other name is the output of that layer of the leader. `layer:NAME` is always
the layer NAME, also one named like a tap (MobileNetV3's own `logits`).

Example:
    >>> import keras_team
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    >>> tap_tensor(leader, "features").shape
    (None, 84)
"""

from __future__ import annotations

import keras

from keras_team import graph
from keras_team.cuts import require_graph
from keras_team.errors import KerasTeamError
from keras_team.transfers import Transferred

TAPS = ("features", "logits", "probs")
PROBABILITIES = ("softmax", "sigmoid")
LAYER = "layer:"
"""Prefix of a tap that names a layer, whatever its name: `layer:logits`."""


def tap_key(tap: str) -> str:
    """The leader tensor a tap reads, as a name part: `probs` reads the logits.

    Example:
        >>> tap_key("probs"), tap_key("layer:logits")
        ('logits', 'layer_logits')
    """
    if tap.startswith(LAYER):
        return "layer_" + tap[len(LAYER):]
    return "logits" if tap == "probs" else tap


def _is_separate_softmax(operation) -> bool:
    """A softmax with no weights of its own: a `Softmax`/`Activation` layer or `keras.ops.softmax`."""
    separate = isinstance(operation, (keras.layers.Softmax, keras.layers.Activation)) or not isinstance(
        operation, keras.layers.Layer
    )
    return separate and graph.final_activation(operation) == "softmax"


def _output_call(leader: keras.Model) -> graph.Call:
    require_graph(leader)
    if len(leader.outputs) != 1:
        raise KerasTeamError(
            "leader", leader.name, f"a model with one output to tap; it has {len(leader.outputs)}: "
            "make a one-output model of the output the team should read, "
            "e.g. keras.Model(leader.inputs, leader.outputs[0])"
        )
    return graph.producer(leader.outputs[0])


def tap_tensor(leader: keras.Model, tap: str):
    """The tensor of `leader`'s graph that `tap` names (logits for `probs`).

    A separate final softmax (a `Softmax` or `Activation` layer, or
    `keras.ops.softmax`) is looked through for the logits; a leader whose
    last layer applies a softmax or sigmoid itself has no logits tensor and
    is refused for the `logits` and `probs` taps. The `features` of a
    `keras_team.Transferred` leader are its cut.

    Example:
        >>> import keras_team
        >>> tap_tensor(keras_team.zoo.seed_cnn((8, 8, 1), 5), "logits").shape
        (None, 5)
    """
    if tap.startswith(LAYER):
        require_graph(leader)
        return _layer_output(leader, tap[len(LAYER):], tap)
    call = _output_call(leader)
    if tap == "features" and isinstance(leader, Transferred):
        return leader.features
    if _is_separate_softmax(call.operation):
        call = graph.producer(call.inputs[0])
    elif tap in ("logits", "probs") and graph.final_activation(call.operation) in PROBABILITIES:
        raise KerasTeamError(
            "tap",
            tap,
            f"a leader whose logits are a tensor: {leader.name!r} ends in a layer with a "
            f"{graph.final_activation(call.operation)} activation; end it in a linear layer "
            "(plus a separate Softmax layer if you want one)",
        )
    if tap_key(tap) == "logits":
        return call.outputs[0]
    if tap == "features":
        return call.inputs[0]
    return _layer_output(leader, tap, tap)


def _layer_output(leader: keras.Model, name: str, tap: str):
    calls = graph.layer_calls(leader)
    named = [c for c in calls if c.operation.name == name]
    if len(named) == 1:
        return named[0].outputs[0]
    if named:
        raise KerasTeamError(
            "tap", tap, f"a layer of {leader.name!r} called once; {name!r} is called {len(named)} times"
        )
    layers = (f"{LAYER}{c.operation.name}" if c.operation.name in TAPS else c.operation.name for c in calls)
    names = ", ".join(dict.fromkeys([*TAPS, *layers]))
    raise KerasTeamError("tap", tap, f"one of the taps or layers of {leader.name!r}: {names}")


def tap_model(leader: keras.Model, taps: list[str], name: str) -> keras.Model:
    """A model sharing `leader`'s layers whose outputs are the tap tensors.

    The outputs are a dict with one entry per `tap_key` of `taps`.

    Example:
        >>> import keras_team
        >>> taps = tap_model(keras_team.zoo.seed_cnn((8, 8, 1), 5), ["features", "probs"], "taps")
        >>> {key: tuple(t.shape) for key, t in taps.output.items()}
        {'features': (None, 84), 'logits': (None, 5)}
    """
    outputs = {tap_key(tap): tap_tensor(leader, tap) for tap in taps}
    return keras.Model(leader.inputs, outputs, name=name)
