"""Taps: the leader outputs a follower reads.

`features` is the input of the leader's output layer (the cut, for a model
made by `transfer`), `logits` its output (before a trailing softmax), `probs`
the softmax of the logits at a temperature (applied by the follower), and any
other name is the output of that layer of the leader. `layer:NAME` is always
the layer NAME, also one named like a tap (MobileNetV3's own `logits`).
The kept part of a `transfer`red leader is one layer of its graph (`body`);
a cut point of that body (`keras_team.cut_points(leader.body)`, e.g. `conv1`
or `block1_out`) is a tap too, computed in the same pass as the cut.

Example:
    >>> import keras_team
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    >>> tap_tensor(leader, "features").shape
    (None, 84)
"""

from __future__ import annotations

import keras

from keras_team import graph
from keras_team.cuts import cut_points, require_graph, resolve_cut
from keras_team.errors import KerasTeamError
from keras_team.layers import InferenceMode
from keras_team.transfers import Transferred

TAPS = ("features", "logits", "probs")
PROBABILITIES = ("softmax", "sigmoid")
LAYER = "layer:"
"""Prefix of a tap that names a layer, whatever its name: `layer:logits`."""
BODY_CUTS = "body_cuts"  # the body in a tap model that also outputs cuts inside it


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
    cut = body_cut(leader, tap)
    if cut is not None:  # a tensor of the body's own graph: `tap_model` computes it with the leader's
        return graph.layer_calls(leader.body)[resolve_cut(leader.body, cut).position].outputs[0]
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
    if isinstance(leader, Transferred):
        cuts = ", ".join(dict.fromkeys(f"{LAYER}{c}" if c in TAPS else c for c in _body_cuts(leader)))
        raise KerasTeamError("tap", tap, f"one of the taps or layers of {leader.name!r}: {names}; "
                             f"or a cut of its body: {cuts}")
    raise KerasTeamError("tap", tap, f"one of the taps or layers of {leader.name!r}: {names}")


def _body_cuts(leader: Transferred) -> list[str]:
    return [cut.name for cut in cut_points(leader.body)]


def body_cut(leader: keras.Model, tap: str) -> str | None:
    """The cut of a transferred leader's body that `tap` names; None when it names something else.

    A tap names a cut of the body when it is no tap name (`features`,
    `logits`, `probs`) nor a layer of the leader's own graph (`body`, the
    head) and the body has that cut; `layer:NAME` reaches a cut named like a
    tap.

    Example:
        >>> import keras_team
        >>> leader = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=3,
        ...                              head=keras_team.heads.dense(5))
        >>> body_cut(leader, "pool1"), body_cut(leader, "features"), body_cut(leader, "body")
        ('pool1', None, None)
    """
    if not isinstance(leader, Transferred) or tap in TAPS:
        return None
    name = tap[len(LAYER):] if tap.startswith(LAYER) else tap
    if name in {call.operation.name for call in graph.layer_calls(leader)}:
        return None
    return name if name in _body_cuts(leader) else None


def tap_model(leader: keras.Model, taps: list[str], name: str) -> keras.Model:
    """A model sharing `leader`'s layers whose outputs are the tap tensors.

    The outputs are a dict with one entry per `tap_key` of `taps`.

    Example:
        >>> import keras_team
        >>> taps = tap_model(keras_team.zoo.seed_cnn((8, 8, 1), 5), ["features", "probs"], "taps")
        >>> {key: tuple(t.shape) for key, t in taps.output.items()}
        {'features': (None, 84), 'logits': (None, 5)}
    """
    inner = [tap for tap in taps if body_cut(leader, tap) is not None]
    if not inner:
        outputs = {tap_key(tap): tap_tensor(leader, tap) for tap in taps}
        return keras.Model(leader.inputs, outputs, name=name)
    # Cuts inside a transferred leader's body: the body again, with those cuts as further outputs (its layers
    # shared, in inference mode as in the leader), then the head; one pass gives the cut, the logits and them.
    body = leader.body
    cuts = keras.Model(body.inputs, [body.outputs[0], *(tap_tensor(leader, tap) for tap in inner)], name=f"{name}_body")
    spec = leader.inputs[0]
    inputs = keras.Input(batch_shape=spec.shape, dtype=spec.dtype, name=spec.name)
    features, *tapped = (InferenceMode(cuts, name=BODY_CUTS) if leader.inference_mode else cuts)(inputs)
    logits = leader.head(features)
    known = {id(leader.features): features, id(leader.outputs[0]): logits, **{id(tap): tap for tap in tapped}}
    outputs = {}
    for tap in taps:
        tensor = tapped[inner.index(tap)] if tap in inner else tap_tensor(leader, tap)
        if id(tensor) not in known:
            raise KerasTeamError("tap", tap, "features, logits, probs or a cut of the body, beside cuts of the "
                                 f"body ({', '.join(inner)}) of {leader.name!r}")
        outputs[tap_key(tap)] = known[id(tensor)]
    return keras.Model(inputs, outputs, name=name)
