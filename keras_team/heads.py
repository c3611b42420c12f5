"""New task heads to put on a cut leader.

Heads are unbuilt `keras.Sequential` stacks: their input width comes from the
features they are called on. Heads are for classification and end in logits
(the Team, its cache, ensemble and report are built for classes).

Example:
    >>> head = dense(10, hidden=(64,), dropout=0.2)
    >>> tuple(head(keras.ops.zeros((2, 4, 4, 16))).shape)
    (2, 10)
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras
from keras import layers

from keras_team.errors import KerasTeamError

# The loss of every classifier keras-team builds or trains: they end in logits.
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def activation_names() -> list[str]:
    """The activation names Keras knows, e.g. for a head's hidden layers.

    Example:
        >>> "relu" in activation_names() and "gelu" in activation_names()
        True
    """
    return sorted(
        name for name in dir(keras.activations)
        if not name.startswith("_") and name not in ("get", "serialize", "deserialize")
    )


def _check(num_classes: int, dropout: float, activation: str) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise KerasTeamError("num_classes", num_classes, "an int >= 1")
    if not 0.0 <= dropout < 1.0:
        raise KerasTeamError("dropout", dropout, "a float in [0, 1)")
    if not callable(activation) and activation not in activation_names():
        raise KerasTeamError("activation", activation, f"one of {', '.join(activation_names())}")


def dense(
    num_classes: int,
    *,
    hidden: Sequence[int] = (),
    dropout: float = 0.0,
    activation: str = "relu",
    name: str = "head",
    seed: int | None = None,
) -> keras.Sequential:
    """Flatten, then `hidden` Dense layers, dropout, then the logits layer.

    Args:
        num_classes: classes of the target task (width of the logits).
        hidden: units of each hidden Dense layer.
        dropout: dropout rate before the logits layer.
        activation: activation of the hidden layers (see `activation_names`).
        name: layer name of the head.
        seed: seeds the head's own initial weights and dropout (the global
            random state is left alone); None draws them from it.

    Example:
        >>> tuple(dense(3, hidden=(8,))(keras.ops.zeros((2, 84))).shape)
        (2, 3)
        >>> a, b = dense(3, seed=1), dense(3, seed=1)
        >>> bool(np.array_equal(a(np.ones((1, 4))), b(np.ones((1, 4)))))
        True
    """
    _check(num_classes, dropout, activation)

    def kernel(index: int):  # a seed per layer: layers of one shape must not start equal
        return "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=seed + index)

    stack = [layers.Flatten(name="flatten")]
    for index, units in enumerate(hidden, start=1):
        stack.append(layers.Dense(units, activation=activation, kernel_initializer=kernel(index), name=f"hidden{index}"))
    if dropout:
        stack.append(layers.Dropout(dropout, seed=seed, name="dropout"))
    stack.append(layers.Dense(num_classes, kernel_initializer=kernel(0), name="logits", dtype="float32"))
    return keras.Sequential(stack, name=name)


def conv(
    num_classes: int,
    *,
    filters: Sequence[int] = (64,),
    kernel_size: int = 3,
    dropout: float = 0.0,
    activation: str = "relu",
    name: str = "head",
) -> keras.Sequential:
    """Conv layers for features that are still spatial, global pooling, the logits layer.

    Args:
        num_classes: classes of the target task.
        filters: output channels of each conv layer.
        kernel_size: their kernel size.
        dropout: dropout rate before the logits layer.
        activation: activation of the conv layers (see `activation_names`).
        name: layer name of the head.

    Example:
        >>> tuple(conv(10, filters=(32,))(keras.ops.zeros((2, 5, 5, 16))).shape)
        (2, 10)
    """
    _check(num_classes, dropout, activation)
    stack = [
        layers.Conv2D(width, kernel_size, padding="same", activation=activation, name=f"conv{index}")
        for index, width in enumerate(filters, start=1)
    ]
    stack.append(layers.GlobalAveragePooling2D(name="avg_pool"))
    if dropout:
        stack.append(layers.Dropout(dropout, name="dropout"))
    stack.append(layers.Dense(num_classes, name="logits", dtype="float32"))
    return keras.Sequential(stack, name=name)
