"""Transfer: keep a leader's first N layers (copied), freeze them, add a new head.

Example:
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
    >>> student = transfer(leader, keep=3, head=keras_team.heads.dense(5))
    >>> [layer.name for layer in student.get_layer("body").layers][-2:]
    ['flatten', 'fc1']
"""

from __future__ import annotations

import keras

from keras_team.cuts import layer_calls, resolve_cut
from keras_team.errors import KerasTeamError
from keras_team.freezing import freeze as freeze_model

BODY = "body"


def _copy(model: keras.Model) -> keras.Model:
    try:
        clone = keras.models.clone_model(model)
    except Exception as error:  # clone_model raises many types for unclonable layers
        raise KerasTeamError(
            "leader", model.name, f"a model whose layers can be rebuilt from their configs ({error})"
        ) from error
    clone.set_weights(model.get_weights())
    return clone


def body(leader: keras.Model, keep: int | str, *, share: bool = False) -> keras.Model:
    """The leader's kept part, up to the cut `keep` names, as a functional model.

    Args:
        leader: a built Sequential or functional model.
        keep: weighted-layer depth (int) or cut-point layer name.
        share: reuse the leader's layers (hard parameter sharing) instead of
            copying their weights into new layers.

    Example:
        >>> body(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=2).output_shape
        (None, 64)
    """
    cut = resolve_cut(leader, keep)
    source = leader if share else _copy(leader)
    features = layer_calls(source)[cut.position].output_tensors[0]
    return keras.Model(source.inputs, features, name=BODY)


def transfer(
    leader: keras.Model,
    keep: int | str,
    head: keras.layers.Layer,
    *,
    freeze: bool = True,
    share: bool = False,
    name: str | None = None,
) -> keras.Model:
    """A new model: the leader's first `keep` weighted layers plus a new head.

    The kept part is a nested model named "body" followed by the head; the
    leader is left unchanged unless `share=True`.

    Args:
        leader: the trained source model.
        keep: weighted-layer depth (int) or cut-point layer name; an invalid
            value raises `KerasTeamError` listing the valid ones.
        head: a layer or unbuilt model applied to the cut's features, e.g.
            `keras_team.heads.dense(num_classes)`.
        freeze: freeze the kept part (`trainable=False`).
        share: share the leader's layers instead of copying them.
        name: model name; defaults to "<leader name>_transfer".

    Example:
        >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
        >>> model = transfer(leader, keep=3, head=keras_team.heads.dense(5))
        >>> model.output_shape
        (None, 5)
    """
    if not isinstance(head, keras.layers.Layer):
        raise KerasTeamError("head", head, "a keras Layer or unbuilt model, e.g. keras_team.heads.dense(10)")
    kept = body(leader, keep, share=share)
    if freeze:
        freeze_model(kept)
    inputs = [
        keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in kept.inputs
    ]
    features = kept(inputs[0] if len(inputs) == 1 else inputs)
    try:
        outputs = head(features)
    except ValueError as error:
        raise KerasTeamError(
            "head", head.name, f"a head that accepts the features at the cut, shaped {tuple(features.shape)} ({error})"
        ) from error
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=name or f"{leader.name}_transfer")
