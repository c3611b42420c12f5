"""Where a model may be cut: the articulation points of its layer graph.

A cut point is a layer call whose output all later computation flows through.
In a plain stack every layer qualifies; inside a residual block none does.
Depth counts *weighted* layers (normalisation layers excluded; a nested model
counts its own weighted layers), so ``keep=3`` on the write-up's CNN keeps
conv1, conv2 and fc1.

Example:
    >>> import keras, keras_team
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
    >>> [c.name for c in keras_team.cut_points(leader) if c.depth == 3]
    ['fc1']
"""

from __future__ import annotations

import dataclasses

import keras

from keras_team.errors import KerasTeamError

NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
    keras.layers.Normalization,
)


@dataclasses.dataclass(frozen=True)
class CutPoint:
    """One place a model may be cut.

    Attributes:
        name: the layer whose output is the cut.
        depth: weighted layers at or before the cut.
        output_shape: the shape of the features at the cut.
        position: index of the layer call in topological order (internal).
    """

    name: str
    depth: int
    output_shape: tuple
    position: int


def weighted_layer_count(layer: keras.layers.Layer) -> int:
    """Weighted layers in `layer`: a nested model counts its own, recursively.

    Example:
        >>> weighted_layer_count(keras_team.zoo.seed_cnn((8, 8, 1), 5))  # conv1, conv2, fc1, fc2, fc3
        5
    """
    if isinstance(layer, keras.Model):
        return sum(weighted_layer_count(inner) for inner in layer.layers)
    if isinstance(layer, (keras.layers.InputLayer, *NORMALIZATION_LAYERS)):
        return 0
    if not layer.built:
        # Every Keras layer that owns weights declares them in build();
        # an unbuilt layer in a built model has none.
        return 0
    return int(bool(layer.weights))


def _require_graph(model: keras.Model) -> None:
    try:
        has_graph = isinstance(model, keras.Model) and bool(model.outputs)
    except (AttributeError, ValueError):  # subclassed or unbuilt models have no outputs
        has_graph = False
    if not has_graph:
        raise KerasTeamError(
            "leader",
            getattr(model, "name", model),
            "a built Sequential or functional keras.Model "
            "(give a Sequential a keras.Input first; subclassed models have no graph to cut)",
        )


def layer_calls(model: keras.Model) -> list:
    """The model's layer calls (graph nodes) in topological order, inputs excluded."""
    _require_graph(model)
    order, seen = [], set()

    def visit(tensor):
        operation, node_index, _ = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.input_tensors:
            visit(parent)
        if not isinstance(operation, keras.layers.InputLayer):
            order.append(node)

    for output in model.outputs:
        visit(output)
    return order


def cut_points(model: keras.Model) -> list[CutPoint]:
    """The valid cuts of a Sequential or functional model, in order.

    Args:
        model: a built `keras.Model` with a layer graph.

    Returns:
        A list of `CutPoint(name, depth, output_shape, position)`.

    Example:
        >>> cuts = keras_team.cut_points(keras_team.zoo.residual_cnn((8, 8, 1), 5))
        >>> any(c.name.startswith("block1_conv2") for c in cuts)
        False
    """
    calls = layer_calls(model)
    consumers_after = {}  # tensor id -> last position that consumes it
    for position, node in enumerate(calls):
        for tensor in node.input_tensors:
            consumers_after[id(tensor)] = position
    for tensor in model.outputs:
        consumers_after[id(tensor)] = len(calls)

    live = {id(t): t for t in model.inputs if consumers_after.get(id(t), -1) >= 0}
    counted, depth, cuts = set(), 0, []
    for position, node in enumerate(calls):
        layer = node.operation
        if id(layer) not in counted:
            counted.add(id(layer))
            depth += weighted_layer_count(layer)
        for tensor in node.output_tensors:
            live[id(tensor)] = tensor
        live = {k: t for k, t in live.items() if consumers_after.get(k, -1) > position}
        outputs = node.output_tensors
        if len(outputs) == 1 and set(live) == {id(outputs[0])}:
            shape = tuple(outputs[0].shape)
            cuts.append(CutPoint(layer.name, depth, shape, position))
    return cuts


def resolve_cut(model: keras.Model, keep: int | str) -> CutPoint:
    """The cut that `keep` names: a weighted-layer depth or a layer name.

    For a depth N the cut is the last cut point before weighted layer N + 1,
    so pooling, flatten and activation layers after layer N are kept.

    Example:
        >>> resolve_cut(keras_team.zoo.seed_cnn((8, 8, 1), 5), 2).name
        'flatten'
    """
    cuts = cut_points(model)
    if isinstance(keep, bool) or not isinstance(keep, (int, str)):
        raise KerasTeamError("keep", keep, "an int depth or a layer name")
    if isinstance(keep, str):
        named = [c for c in cuts if c.name == keep]
        if not named:
            names = ", ".join(c.name for c in cuts)
            raise KerasTeamError("keep", keep, f"a layer name that is a cut point of {model.name!r}: {names}")
        return named[-1]
    at_depth = [c for c in cuts if c.depth == keep and keep >= 1]
    if not at_depth:
        depths = sorted({c.depth for c in cuts if c.depth >= 1})
        raise KerasTeamError(
            "keep", keep, f"a weighted-layer depth at a cut point of {model.name!r}: {', '.join(map(str, depths))}"
        )
    return at_depth[-1]
