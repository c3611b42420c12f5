"""Dtype policies passed the Keras way: `Team(..., dtype="mixed_float16")`, `Transferred(..., dtype=...)`.

A model made of models that exist already (a leader, a transferred body, a
follower) cannot hand its `dtype` to layers as they are made, as keras-hub's
backbones and tasks do: `apply` sets the policy on every layer it holds
instead. The layers computing the members' logits compute in float32 (Keras'
mixed precision guide keeps a model's output in float32), so losses and
predictions stay float32 while the rest computes in half precision.
Variables stay float32: only policies with float32 variables are taken.

Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="hidden"),
    ...                           keras.layers.Dense(2, name="logits")])
    >>> apply([model], policy("mixed_float16"), float32=[model.get_layer("logits")])
    >>> model.get_layer("hidden").compute_dtype, model.get_layer("logits").compute_dtype
    ('float16', 'float32')
"""

from __future__ import annotations

from collections.abc import Iterable

import keras

from keras_team import graph
from keras_team.errors import KerasTeamError

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def policy(value, field: str = "dtype") -> keras.DTypePolicy | None:
    """The dtype policy `value` names (a name or a `keras.DTypePolicy`); None for None.

    Example:
        >>> policy("mixed_bfloat16").compute_dtype
        'bfloat16'
        >>> policy("bfloat16")
        Traceback (most recent call last):
        keras_team.errors.KerasTeamError: dtype='bfloat16' is not valid: expected None or one of float32, mixed_float16, mixed_bfloat16 (policies whose variables are float32: the members' weights exist already)
    """
    if value is None:
        return None
    name = value.name if isinstance(value, keras.DTypePolicy) else value
    if name not in POLICIES or (isinstance(value, keras.DTypePolicy) and value.quantization_mode is not None):
        raise KerasTeamError(field, name if isinstance(name, str) else value,
                             f"None or one of {', '.join(POLICIES)} (policies whose variables are float32: "
                             "the members' weights exist already)")
    return keras.dtype_policies.get(name)


def apply(models: Iterable, policy: keras.DTypePolicy, *, float32: Iterable = ()) -> None:
    """Set `policy` on every layer of `models`, in place; the layers in `float32` compute in float32.

    Args:
        models: layers or models whose layers (at any depth) take the policy.
        policy: a policy from `policy`.
        float32: layers that compute in float32 whatever the policy (the logits layers).
    """
    pinned = {id(layer) for layer in float32}
    for model in models:
        for layer in graph.sublayers(model):
            layer.dtype_policy = "float32" if id(layer) in pinned else policy
