"""New task heads to put on a cut leader.

Heads are unbuilt `keras.Sequential` stacks: their input width comes from the
features they are called on. Classification heads end in logits.

Example:
    >>> head = dense(10, hidden=(64,), dropout=0.2)
    >>> head(keras.ops.zeros((2, 4, 4, 16))).shape
    (2, 10)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from keras_team.errors import KerasTeamError

TASKS = ("classification", "regression")


def _output_layer(units: int, task: str) -> layers.Dense:
    if task not in TASKS:
        raise KerasTeamError("task", task, f"one of {', '.join(TASKS)}")
    if units < 1:
        raise KerasTeamError("num_outputs", units, "an int >= 1")
    return layers.Dense(units, name="logits" if task == "classification" else "values", dtype="float32")


def dense(
    num_outputs: int,
    *,
    hidden: Sequence[int] = (),
    dropout: float = 0.0,
    activation: str = "relu",
    task: str = "classification",
    name: str = "head",
) -> keras.Sequential:
    """Flatten, then `hidden` Dense layers with dropout, then the output layer.

    Args:
        num_outputs: classes (logits) or regression targets.
        hidden: units of each hidden Dense layer.
        dropout: dropout rate after each hidden layer (and before the output).
        activation: activation of the hidden layers.
        task: "classification" (logits) or "regression" (linear values).
        name: layer name of the head.

    Example:
        >>> dense(3, task="regression")(keras.ops.zeros((2, 84))).shape
        (2, 3)
    """
    if not 0.0 <= dropout < 1.0:
        raise KerasTeamError("dropout", dropout, "a float in [0, 1)")
    stack = [layers.Flatten(name="flatten")]
    for index, units in enumerate(hidden, start=1):
        stack.append(layers.Dense(units, activation=activation, name=f"hidden{index}"))
    if dropout:
        stack.append(layers.Dropout(dropout, name="dropout"))
    stack.append(_output_layer(num_outputs, task))
    return keras.Sequential(stack, name=name)


def conv(
    num_outputs: int,
    *,
    filters: Sequence[int] = (64,),
    kernel_size: int = 3,
    dropout: float = 0.0,
    activation: str = "relu",
    task: str = "classification",
    name: str = "head",
) -> keras.Sequential:
    """Conv layers for features that are still spatial, global pooling, output layer.

    Example:
        >>> conv(10, filters=(32,))(keras.ops.zeros((2, 5, 5, 16))).shape
        (2, 10)
    """
    if not 0.0 <= dropout < 1.0:
        raise KerasTeamError("dropout", dropout, "a float in [0, 1)")
    stack = [
        layers.Conv2D(width, kernel_size, padding="same", activation=activation, name=f"conv{index}")
        for index, width in enumerate(filters, start=1)
    ]
    stack.append(layers.GlobalAveragePooling2D(name="avg_pool"))
    if dropout:
        stack.append(layers.Dropout(dropout, name="dropout"))
    stack.append(_output_layer(num_outputs, task))
    return keras.Sequential(stack, name=name)
