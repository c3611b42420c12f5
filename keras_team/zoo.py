"""Small reference models: the write-up's CNN, an MLP follower, a residual CNN.

Every model takes raw pixels (uint8 0..255) and scales them itself; classifiers
end in logits (no softmax), so `logits` and `probs` taps are exact.

Example:
    >>> leader = seed_cnn((32, 32, 3), num_classes=10)   # the write-up's SimpleCNN
    >>> [layer.name for layer in leader.layers][1:4]
    ['conv1', 'pool1', 'conv2']
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from keras_team import heads

# Small datasets give few steps: moving statistics must settle within them.
BN_MOMENTUM = 0.9


def _fits_valid_convs(size: int) -> bool:
    # Two (5x5 valid conv, 2x2 pool) stages need 16 pixels to leave one.
    return ((size - 4) // 2 - 4) // 2 >= 1


def seed_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    scale: float = 1 / 255,
    name: str = "seed_cnn",
) -> keras.Model:
    """The write-up's SimpleCNN: conv-pool-conv-pool-fc120-fc84-fc.

    Images smaller than 16 pixels use "same" padding so any size works.

    Args:
        input_shape: (height, width, channels) of the raw images.
        num_classes: outputs of the final (logits) layer `fc3`.
        scale: multiplier of the leading `Rescaling` layer.
        name: model name.

    Example:
        >>> seed_cnn((8, 8, 1), 5).output_shape
        (None, 5)
    """
    padding = "valid" if _fits_valid_convs(min(input_shape[:2])) else "same"
    return keras.Sequential(
        [
            keras.Input(tuple(input_shape), name="pixels"),
            layers.Rescaling(scale, name="rescale"),
            layers.Conv2D(6, 5, padding=padding, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(16, 5, padding=padding, activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(120, activation="relu", name="fc1"),
            layers.Dense(84, activation="relu", name="fc2"),
            layers.Dense(num_classes, name="fc3", dtype="float32"),
        ],
        name=name,
    )


def mlp(
    num_classes: int,
    *,
    hidden: Sequence[int] = (50,),
    dropout: float = 0.0,
    activation: str = "relu",
    name: str = "mlp",
) -> keras.Sequential:
    """An MLP follower (the write-up's SimpleFNN), unbuilt: its width comes from its input.

    The stack of `keras_team.heads.dense` (flatten, hidden Dense layers,
    dropout, logits), with the write-up's 50 hidden units by default.

    Example:
        >>> follower = mlp(5)
        >>> tuple(follower(keras.ops.zeros((2, 84))).shape)
        (2, 5)
    """
    return heads.dense(num_classes, hidden=hidden, dropout=dropout, activation=activation, name=name)


def _residual_block(x, filters: int, name: str):
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, name=f"{name}_project")(x)
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv1")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(x)
    x = layers.ReLU(name=f"{name}_relu1")(x)
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(x)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def residual_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    filters: Sequence[int] = (16, 32),
    scale: float = 1 / 255,
    name: str = "residual_cnn",
) -> keras.Model:
    """A small ResNet: a stem conv, one residual block per entry of `filters`, logits.

    Cut points fall between blocks (``block1_out``, ``pool1``, ...), never inside.

    Example:
        >>> residual_cnn((8, 8, 1), 5).output_shape
        (None, 5)
    """
    inputs = keras.Input(tuple(input_shape), name="pixels")
    x = layers.Rescaling(scale, name="rescale")(inputs)
    x = layers.Conv2D(filters[0], 3, padding="same", name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for index, width in enumerate(filters, start=1):
        x = _residual_block(x, width, f"block{index}")
        if index < len(filters):
            x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
