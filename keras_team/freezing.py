"""Freeze and unfreeze with the `trainable` flag.

`unfreeze` counts from the top of the frozen part, either weighted layers or
blocks: the architecture's blocks, as `cut_points(model, view="blocks")`
ends them (a residual or inverted-bottleneck block, a stem, a Keras-named
weighted layer with the activation after it); a nested backbone counts its
own blocks. Batch norm stays frozen by default, while layer, group, RMS and
spectral normalisation are trained with the layers around them, as
Transformers are usually fine-tuned. The kept part of a
`keras_team.Transferred` model runs in inference mode whether frozen or
not, so unfrozen batch norm trains its scale and offset but keeps its
moving statistics.

Example:
    >>> import keras_team
    >>> model = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    >>> freeze(model).trainable_weights
    []
    >>> [w.path for w in unfreeze(model, top=1).trainable_weights]
    ['seed_cnn/fc3/kernel', 'seed_cnn/fc3/bias']
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import keras

from keras_team import graph
from keras_team.cuts import NORMALIZATION_KINDS, cut_points, normalization_kind, weighted_layer_count
from keras_team.errors import KerasTeamError
from keras_team.layers import InferenceMode
from keras_team.transfers import Transferred

UNITS = ("layers", "blocks")
TRAINED_NORMS = ("layer", "group", "rms", "spectral")
"""Normalisation kinds `unfreeze` trains by default; batch norm is not one."""


def _inner(layer) -> keras.layers.Layer:
    return layer.layer if isinstance(layer, InferenceMode) else layer


def _containers(model: keras.layers.Layer):
    """The model and every nested model or `InferenceMode` wrapper, outermost first."""
    yield model
    for layer in model.layers:
        if isinstance(layer, InferenceMode) or isinstance(_inner(layer), keras.Model):
            yield layer
            if isinstance(_inner(layer), keras.Model):
                yield from _containers(_inner(layer))


def units(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers of `model` with nested models and `InferenceMode` wrappers opened, in order.

    Example:
        >>> import keras_team
        >>> student = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), 1, keras_team.heads.dense(2))
        >>> [layer.name for layer in units(student)][2:]
        ['rescale', 'conv1', 'pool1', 'flatten', 'logits']
    """
    inner = _inner(model)
    if not isinstance(inner, keras.Model):
        return [inner]
    flat = []
    for layer in inner.layers:
        flat.extend(units(layer))
    return flat


def is_trained(layer: keras.layers.Layer, model: keras.Model) -> bool:
    """Whether `fit` on `model` would update `layer`'s weights.

    Example:
        >>> import keras_team
        >>> student = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), 1, keras_team.heads.dense(2))
        >>> is_trained(student.body.get_layer("conv1"), student), is_trained(student.head, student)
        (False, True)
    """
    trainable = {id(w) for w in model.trainable_weights}
    return any(id(w) in trainable for w in layer.weights)


def freeze(model: keras.layers.Layer) -> keras.layers.Layer:
    """Freeze every layer of `model` (recompile before the next `fit`).

    Example:
        >>> import keras_team
        >>> freeze(keras_team.zoo.seed_cnn((8, 8, 1), 5)).trainable
        False
    """
    model.trainable = False
    return model


def _blocks(model: keras.Model) -> list[list[keras.layers.Layer]]:
    """The units of `model` grouped into the blocks of its architecture."""
    source = model.body if isinstance(model, Transferred) else model
    if not graph.has_graph(source):
        raise KerasTeamError("unit", "blocks", "a Sequential or functional model, whose cut points bound the blocks")
    return _graph_blocks(source)


def _graph_blocks(source: keras.Model) -> list[list[keras.layers.Layer]]:
    """The units of `source` in the runs of layer calls that end at its block-view cuts.

    A nested model with weights and a graph (a backbone inside
    `Sequential([backbone, ...])`) brings its own blocks instead of being one.
    """
    ends = {cut.position for cut in cut_points(source, view="blocks")}
    blocks, current, seen = [], [], set()
    for position, call in enumerate(graph.layer_calls(source)):
        operation = call.operation
        if isinstance(operation, keras.layers.Layer) and id(operation) not in seen:
            seen.add(id(operation))
            inner = _inner(operation)
            if isinstance(inner, keras.Model) and graph.has_graph(inner) and weighted_layer_count(inner):
                blocks += [current, *_graph_blocks(inner)]
                current = []
            else:
                current.extend(units(operation))
        if position in ends:
            blocks.append(current)
            current = []
    return [block for block in blocks + [current] if block]


def unfreeze(
    model: keras.Model,
    top: int | None = None,
    *,
    unit: str = "layers",
    train_norms: Iterable[str] = TRAINED_NORMS,
) -> keras.Model:
    """Unfreeze the top `top` frozen weighted layers or blocks (all when None).

    Counting starts at the highest frozen weighted layer, i.e. the top of the
    kept part of a transferred model, whose new head is trainable already.
    Layers already trained stay trained. Normalisation layers are not
    counted: those of a kind in `train_norms` are unfrozen with the span
    above the lowest unfrozen layer, the others stay frozen. Recompile
    before the next `fit`.

    Args:
        model: a model built by `keras_team.transfer` or any Keras model.
        top: how many frozen units to unfreeze, from the top.
        unit: "layers" (weighted layers) or "blocks" (the architecture's
            blocks in the kept part, as its block-view cuts end them: e.g. a
            whole residual, inverted-bottleneck or Transformer block, or the
            stem; blocks without weights are not counted).
        train_norms: normalisation kinds (keys of
            `keras_team.cuts.NORMALIZATION_KINDS`) to train when unfrozen;
            default layer, group, RMS and spectral norm, not batch norm.

    Example:
        >>> import keras_team
        >>> model = freeze(keras_team.zoo.seed_cnn((8, 8, 1), 5))
        >>> len(unfreeze(model, top=2).trainable_weights)
        4
        >>> model = unfreeze(freeze(keras_team.zoo.residual_cnn((8, 8, 1), 5)), top=2, unit="blocks")
        >>> [layer.name for layer in model.layers if is_trained(layer, model)]
        ['block2_conv1', 'block2_conv2', 'block2_project', 'logits']
    """
    layers = units(model)
    trained = {id(layer) for layer in layers if is_trained(layer, model)}
    keep_trained = trained | {id(layer) for layer in to_unfreeze(model, top, unit=unit, train_norms=train_norms)}
    for container in _containers(model):
        container.trainable = True
    for layer in layers:
        layer.trainable = id(layer) in keep_trained
    return model


def to_unfreeze(
    model: keras.Model,
    top: int | None = None,
    *,
    unit: str = "layers",
    train_norms: Iterable[str] = TRAINED_NORMS,
) -> list[keras.layers.Layer]:
    """The frozen layers `unfreeze(model, top, ...)` would make trainable, in order; `model` is left as it is.

    Example:
        >>> import keras_team
        >>> model = freeze(keras_team.zoo.seed_cnn((8, 8, 1), 5))
        >>> [layer.name for layer in to_unfreeze(model, top=1)], model.trainable_weights
        (['fc3'], [])
    """
    if unit not in UNITS:
        raise KerasTeamError("unit", unit, f"one of {', '.join(UNITS)}")
    train_norms = (train_norms,) if isinstance(train_norms, str) else tuple(train_norms)
    unknown = [kind for kind in train_norms if kind not in NORMALIZATION_KINDS]
    if unknown:
        raise KerasTeamError("train_norms", unknown, f"kinds among {', '.join(NORMALIZATION_KINDS)}")

    layers = units(model)
    trained = {id(layer) for layer in layers if is_trained(layer, model)}

    def counted(layer) -> bool:  # a frozen weighted layer that unfreezing would train
        kind = normalization_kind(layer)
        return (
            weighted_layer_count(layer) > 0 and id(layer) not in trained
            and (kind is None or kind in train_norms)
        )

    groups = [[layer] for layer in layers] if unit == "layers" else _blocks(model)
    frozen = [group for group in groups if any(counted(layer) for layer in group)]
    if top is None:
        top = len(frozen)
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or not 0 <= top <= len(frozen):
        raise KerasTeamError("top", top, f"an int from 0 to {len(frozen)} (the frozen {unit})")
    chosen_groups = frozen[len(frozen) - int(top):]
    chosen = [layer for group in chosen_groups for layer in group if counted(layer)]
    lowest = min((layers.index(layer) for group in chosen_groups for layer in group), default=len(layers))
    chosen_ids = {id(layer) for layer in chosen}
    return [layer for position, layer in enumerate(layers) if id(layer) not in trained and (
        id(layer) in chosen_ids or (position >= lowest and normalization_kind(layer) in train_norms))]
