"""Taps: the leader outputs a follower reads.

`features` is the input of the leader's output layer (the cut, for a model
made by `transfer`), `logits` its output (before a trailing softmax), `probs`
the softmax of the logits at a temperature (applied by the follower), and any
other name is the output of that layer of the leader.

Example:
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    >>> tap_tensor(leader, "features").shape
    (None, 84)
"""

from __future__ import annotations

import keras

from keras_team.cuts import layer_calls
from keras_team.errors import KerasTeamError

TAPS = ("features", "logits", "probs")


def _is_softmax(layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    return isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.softmax


def _ends_in_softmax(layer) -> bool:
    if isinstance(layer, keras.Model):
        return _ends_in_softmax(layer.layers[-1])
    return getattr(layer, "activation", None) is keras.activations.softmax


def _producer(tensor):
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def tap_key(tap: str) -> str:
    """The leader tensor a tap reads: `probs` reads the logits."""
    return "logits" if tap == "probs" else tap


def tap_tensor(leader: keras.Model, tap: str):
    """The tensor of `leader`'s graph that `tap` names (logits for `probs`).

    Example:
        >>> tap_tensor(keras_team.zoo.seed_cnn((8, 8, 1), 5), "logits").shape
        (None, 5)
    """
    node = _producer(leader.outputs[0])
    if _is_softmax(node.operation):
        node = _producer(node.input_tensors[0])
    elif tap in ("logits", "probs") and _ends_in_softmax(node.operation):
        raise KerasTeamError(
            "tap",
            tap,
            f"a leader whose logits are a tensor: {leader.name!r} ends in a layer with a softmax "
            "activation; end it in a linear layer (plus a separate Softmax layer if you want one)",
        )
    if tap_key(tap) == "logits":
        return node.output_tensors[0]
    if tap == "features":
        return node.input_tensors[0]
    for call in layer_calls(leader):
        if call.operation.name == tap:
            return call.output_tensors[0]
    names = ", ".join([*TAPS, *(call.operation.name for call in layer_calls(leader))])
    raise KerasTeamError("tap", tap, f"one of the taps or layers of {leader.name!r}: {names}")


def tap_model(leader: keras.Model, taps: list[str], name: str) -> keras.Model:
    """A model sharing `leader`'s layers whose outputs are the tap tensors.

    The outputs are a dict with one entry per `tap_key` of `taps`.
    """
    outputs = {tap_key(tap): tap_tensor(leader, tap) for tap in taps}
    return keras.Model(leader.inputs, outputs, name=name)
