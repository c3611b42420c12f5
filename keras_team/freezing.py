"""Freeze and unfreeze with the `trainable` flag.

Frozen batch-norm layers run in inference mode: in Keras 3 a
`BatchNormalization` layer with `trainable=False` uses its moving statistics
and never updates them, whatever `training` its caller passes. `unfreeze`
never unfreezes a normalisation layer, so batch-norm stays frozen while the
layers around it are fine-tuned (the Keras transfer-learning guide's rule).

Example:
    >>> model = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    >>> freeze(model).trainable_weights
    []
    >>> [w.path for w in unfreeze(model, top=1).trainable_weights]
    ['seed_cnn/fc3/kernel', 'seed_cnn/fc3/bias']
"""

from __future__ import annotations

import keras

from keras_team.cuts import NORMALIZATION_LAYERS, weighted_layer_count
from keras_team.errors import KerasTeamError


def _models(model: keras.Model):
    yield model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _models(layer)


def units(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers with nested models opened up, in order."""
    flat = []
    for layer in model.layers:
        flat.extend(units(layer) if isinstance(layer, keras.Model) else [layer])
    return flat


def is_trained(layer: keras.layers.Layer, model: keras.Model) -> bool:
    """Whether `fit` on `model` would update `layer`'s weights."""
    trainable = {id(w) for w in model.trainable_weights}
    return any(id(w) in trainable for w in layer.weights)


def freeze(model: keras.Model) -> keras.Model:
    """Freeze every layer of `model` (recompile before the next `fit`).

    Example:
        >>> freeze(keras_team.zoo.seed_cnn((8, 8, 1), 5)).trainable
        False
    """
    model.trainable = False
    return model


def unfreeze(model: keras.Model, top: int | None = None) -> keras.Model:
    """Unfreeze the top `top` frozen weighted layers (all when None); norms stay frozen.

    Counting starts at the highest frozen weighted layer, i.e. the top of the
    kept part of a transferred model, whose new head is trainable already.
    Layers already trained stay trained. Recompile before the next `fit`.

    Args:
        model: a model built by `keras_team.transfer` or any Keras model.
        top: how many frozen weighted layers to unfreeze, from the top.

    Example:
        >>> model = freeze(keras_team.zoo.seed_cnn((8, 8, 1), 5))
        >>> len(unfreeze(model, top=2).trainable_weights)
        4
    """
    layers = units(model)
    trained = [layer for layer in layers if is_trained(layer, model)]
    frozen = [
        layer
        for layer in layers
        if weighted_layer_count(layer) and not is_trained(layer, model)
        and not isinstance(layer, NORMALIZATION_LAYERS)
    ]
    if top is None:
        top = len(frozen)
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= len(frozen):
        raise KerasTeamError("unfreeze", top, f"an int from 0 to {len(frozen)} (the frozen weighted layers)")
    keep_trained = {id(layer) for layer in trained + frozen[len(frozen) - top :]}
    for container in _models(model):
        container.trainable = True
    for layer in layers:
        layer.trainable = id(layer) in keep_trained
    return model
