"""Where a model may be cut: the articulation points of its layer graph.

A cut point is a layer call (or a `keras.ops` call) whose output all later
computation flows through. In a plain stack every layer qualifies; inside a
residual block none does. Depth counts *weighted* layers (normalisation
layers excluded; a nested model counts its own weighted layers), so
``keep=3`` on the write-up's CNN keeps conv1, conv2 and fc1.

Example:
    >>> import keras_team
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
    >>> [c.name for c in keras_team.cut_points(leader) if c.depth == 3]
    ['fc1']
"""

from __future__ import annotations

import dataclasses
import numbers

import keras

from keras_team import graph
from keras_team.errors import KerasTeamError

NORMALIZATION_KINDS = {
    "batch": (keras.layers.BatchNormalization,),
    "layer": (keras.layers.LayerNormalization,),
    "group": (keras.layers.GroupNormalization,),
    "rms": (keras.layers.RMSNormalization,),
    "spectral": (keras.layers.SpectralNormalization,),
    "unit": (keras.layers.UnitNormalization,),
    "input": (keras.layers.Normalization,),
}
"""Normalisation layers by kind, the names `unfreeze(train_norms=...)` takes."""

NORMALIZATION_LAYERS = tuple(cls for classes in NORMALIZATION_KINDS.values() for cls in classes)


def normalization_kind(layer) -> str | None:
    """The `NORMALIZATION_KINDS` key of a normalisation layer, else None.

    Example:
        >>> normalization_kind(keras.layers.RMSNormalization())
        'rms'
    """
    for kind, classes in NORMALIZATION_KINDS.items():
        if isinstance(layer, classes):
            return kind
    return None


@dataclasses.dataclass(frozen=True)
class CutPoint:
    """One place a model may be cut.

    Attributes:
        name: the layer (or `keras.ops` operation) whose output is the cut.
        depth: weighted layers at or before the cut.
        output_shape: the shape of the features at the cut.
        position: index of the call in topological order
            (`keras_team.graph.layer_calls`); tells apart two calls of one layer.
    """

    name: str
    depth: int
    output_shape: tuple
    position: int


def weighted_layer_count(layer) -> int:
    """Weighted layers in `layer`: a nested model counts its own, recursively.

    Normalisation layers count 0, except `SpectralNormalization`, which
    wraps a weighted layer and counts as that layer. `keras.ops` calls
    count 0.

    Example:
        >>> import keras_team
        >>> weighted_layer_count(keras_team.zoo.seed_cnn((8, 8, 1), 5))
        5
        >>> weighted_layer_count(keras.layers.BatchNormalization())
        0
    """
    if isinstance(layer, keras.Model):
        return sum(weighted_layer_count(inner) for inner in layer.layers)
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.layers.InputLayer):
        return 0
    if normalization_kind(layer) not in (None, "spectral"):
        return 0
    if not layer.built:
        # Every Keras layer that owns weights declares them in build();
        # an unbuilt layer in a built model has none.
        return 0
    return int(bool(layer.weights))


def require_graph(model) -> None:
    """Raise `KerasTeamError` unless `model` is a built Sequential or functional model."""
    if not graph.has_graph(model):
        raise KerasTeamError(
            "leader",
            getattr(model, "name", model),
            "a built Sequential or functional keras.Model "
            "(give a Sequential a keras.Input first; subclassed models have no graph to cut)",
        )


def cut_points(model: keras.Model) -> list[CutPoint]:
    """The valid cuts of a Sequential or functional model, in order.

    Args:
        model: a built `keras.Model` with a layer graph; `keras.ops` calls
            between layers are part of the graph (and may be cuts).

    Returns:
        A list of `CutPoint(name, depth, output_shape, position)`. A layer
        called twice may appear twice, with different positions.

    Example:
        >>> import keras_team
        >>> cuts = keras_team.cut_points(keras_team.zoo.residual_cnn((8, 8, 1), 5))
        >>> [c.name for c in cuts if c.name.startswith("block1")]
        ['block1_add', 'block1_out']
    """
    require_graph(model)
    calls = graph.layer_calls(model)
    consumers_after = {}  # tensor id -> last position that consumes it
    for position, call in enumerate(calls):
        for tensor in call.inputs:
            consumers_after[id(tensor)] = position
    for tensor in model.outputs:
        consumers_after[id(tensor)] = len(calls)

    live = {id(t): t for t in model.inputs if consumers_after.get(id(t), -1) >= 0}
    counted, depth, cuts = set(), 0, []
    for position, call in enumerate(calls):
        operation = call.operation
        if id(operation) not in counted:
            counted.add(id(operation))
            depth += weighted_layer_count(operation)
        for tensor in call.outputs:
            live[id(tensor)] = tensor
        live = {k: t for k, t in live.items() if consumers_after.get(k, -1) > position}
        if len(call.outputs) == 1 and set(live) == {id(call.outputs[0])}:
            shape = tuple(call.outputs[0].shape)
            cuts.append(CutPoint(operation.name, depth, shape, position))
    return cuts


def resolve_cut(model: keras.Model, keep: int | str | CutPoint) -> CutPoint:
    """The cut that `keep` names: a weighted-layer depth, a layer name or a `CutPoint`.

    For a depth N the cut is the last cut point before weighted layer N + 1,
    so pooling, flatten and activation layers after layer N are kept. A name
    must name one cut: for a layer called at two cut points, pass the
    `CutPoint` itself (from `cut_points(model)`).

    Example:
        >>> import keras_team
        >>> resolve_cut(keras_team.zoo.seed_cnn((8, 8, 1), 5), 2).name
        'flatten'
    """
    cuts = cut_points(model)
    if isinstance(keep, CutPoint):
        if keep not in cuts:
            raise KerasTeamError("keep", keep, f"a CutPoint of {model.name!r} from keras_team.cut_points(model)")
        return keep
    if isinstance(keep, str):
        named = [c for c in cuts if c.name == keep]
        if not named:
            names = ", ".join(dict.fromkeys(c.name for c in cuts))
            raise KerasTeamError("keep", keep, f"a layer name that is a cut point of {model.name!r}: {names}")
        if len(named) > 1:
            options = ", ".join(f"keras_team.cut_points(model)[{cuts.index(c)}] (depth {c.depth})" for c in named)
            raise KerasTeamError(
                "keep",
                keep,
                f"one cut: {keep!r} is called at {len(named)} cut points of {model.name!r}; pass one of {options}",
            )
        return named[0]
    if isinstance(keep, bool) or not isinstance(keep, numbers.Integral):
        raise KerasTeamError("keep", keep, "an int depth, a layer name or a CutPoint")
    at_depth = [c for c in cuts if c.depth == keep and keep >= 1]
    if not at_depth:
        depths = sorted({c.depth for c in cuts if c.depth >= 1})
        raise KerasTeamError(
            "keep", keep, f"a weighted-layer depth at a cut point of {model.name!r}: {', '.join(map(str, depths))}"
        )
    return at_depth[-1]
