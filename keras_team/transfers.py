"""Transfer: keep a leader's first N layers (copied), freeze them, add a new head.

Example:
    >>> import keras_team
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
    >>> student = transfer(leader, keep=3, head=keras_team.heads.dense(5))
    >>> student.cut.name, [layer.name for layer in student.body.layers][-2:]
    ('fc1', ['flatten', 'fc1'])
"""

from __future__ import annotations

import dataclasses

import keras

from keras_team import dtypes, graph
from keras_team.cuts import CutPoint, resolve_cut
from keras_team.errors import KerasTeamError
from keras_team.layers import PACKAGE, InferenceMode

BODY = "body"


def _refuse_tied_weights(kept: keras.Model) -> None:
    owners = {}
    for layer in kept.layers:
        for variable in layer.weights:
            owners.setdefault(id(variable), (variable, []))[1].append(layer.name)
    tied = {variable.path: names for variable, names in owners.values() if len(names) > 1}
    if tied:
        raise KerasTeamError(
            "leader",
            kept.name,
            f"a model whose kept layers own their variables; {tied} are tied between layers, "
            "which a copy would untie: pass share=True to reuse the leader's layers instead",
        )


def copy_model(kept: keras.Model) -> keras.Model:
    """A copy of `kept` with its own layers, the same weights and the same frozen layers (Keras' `clone_model`)."""
    _refuse_tied_weights(kept)
    try:
        if type(kept).__module__.startswith("keras."):  # a functional or sequential model
            clone = keras.models.clone_model(kept)
        else:  # a model class of its own (e.g. `Transferred`), rebuilt from its config as Keras' cloning guide does
            clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(kept))
    # Keras' two ways to fail on a layer it cannot rebuild: `get_config` refuses
    # (NotImplementedError), `from_config` does not take the config (TypeError).
    except (NotImplementedError, TypeError) as error:
        raise KerasTeamError(
            "leader", kept.name, f"a model whose kept layers can be rebuilt from their configs ({error})"
        ) from error
    clone.set_weights(kept.get_weights())
    return refreeze(clone)  # a frozen nested model rebuilt from its config keeps only its own flag


def refreeze(model: keras.Layer) -> keras.Layer:
    """Freeze again, to the bottom, every frozen layer of a model just loaded; returns `model`.

    A model passed `trainable=False` as it is made (what loading a keras-hub
    `Backbone` does: its config keeps only its own flag) leaves the layers
    inside trainable in Keras 3, so an outer model would train them.

    Example:
        >>> inner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> outer = keras.Sequential([keras.Input((2,)), inner])
        >>> inner._trainable = False  # the flag alone, as loading leaves it
        >>> len(outer.trainable_weights), len(refreeze(outer).trainable_weights)
        (2, 0)
    """
    # Setting the flag one layer at a time: Keras skips `layer.trainable = False` on a layer that is False already.
    for frozen in [layer for layer in graph.sublayers(model) if not layer.trainable]:
        for layer in graph.sublayers(frozen):
            layer.trainable = False
    return model


def body(leader: keras.Model, keep: int | str | CutPoint, *, share: bool = False) -> keras.Model:
    """The leader's kept part, up to the cut `keep` names, as a functional model.

    Only the layers up to the cut are copied: layers after it are never
    rebuilt, so they need not be clonable. A layer called twice below the
    cut is one layer, called twice, in the copy too. Variables tied between
    two layers cannot be copied without untying them; such a leader is
    refused unless `share=True`.

    Args:
        leader: a built Sequential or functional model.
        keep: weighted-layer depth (int), cut-point layer name or `CutPoint`.
        share: reuse the leader's layers (hard parameter sharing) instead of
            copying their weights into new layers.

    Example:
        >>> import keras_team
        >>> body(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=2).output_shape
        (None, 64)
    """
    cut = resolve_cut(leader, keep)
    features = graph.layer_calls(leader)[cut.position].outputs[0]
    kept = keras.Model(leader.inputs, features, name=BODY)
    return kept if share else copy_model(kept)


@keras.saving.register_keras_serializable(PACKAGE)
class Transferred(keras.Model):
    """A leader's kept part (the body), run in inference mode, plus a new head.

    In the model's graph the body is the layer named "body", an
    `InferenceMode` wrapper: it runs in inference mode whatever the outer
    `training`, also after `unfreeze`. Dropout and noise inside it are off
    and its batch norm uses, and keeps, its moving statistics (the Keras
    transfer-learning guide's rule). Only its `trainable` flags change
    between the frozen and the fine-tuning stage.

    Args:
        body: the kept part, a functional model (see `keras_team.body`).
        head: a layer or unbuilt model applied to the body's output.
        cut: the `CutPoint` of the leader the body ends at.
        inference_mode: run the body in inference mode (the default); False
            lets it follow the outer `training`, for a body trained from
            scratch, such as a same-architecture baseline.
        name: model name.
        dtype: a dtype policy, e.g. "mixed_float16" (see `keras_team.dtypes`):
            set on every layer of the body and head, in place, except the
            head's logits layer, which stays float32. None leaves each
            layer's own policy.

    Example:
        >>> import keras, keras_team
        >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
        >>> model = keras_team.transfer(leader, keep="fc1", head=keras_team.heads.dense(3))
        >>> model.cut.depth, model.body.output_shape, model.output_shape
        (3, (None, 120), (None, 3))
    """

    def __init__(self, body: keras.Model, head: keras.layers.Layer, cut: CutPoint | dict, *,
                 inference_mode: bool = True, name: str = "transferred", dtype=None, **kwargs):
        # === Layers ===
        policy = dtypes.policy(dtype)
        if not isinstance(head, keras.layers.Layer):
            raise KerasTeamError("head", head, "a keras Layer or unbuilt model, e.g. keras_team.heads.dense(10)")
        cut = CutPoint(**{**cut, "output_shape": tuple(cut["output_shape"])}) if isinstance(cut, dict) else cut
        if policy is not None:
            dtypes.apply([body, head], policy, float32=[graph.output_layer(head)])
        body_layer = InferenceMode(body, name=BODY, dtype=policy) if inference_mode else body

        # === Functional model ===
        inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in body.inputs]
        inputs = inputs[0] if len(inputs) == 1 else inputs
        features = body_layer(inputs)
        try:
            outputs = head(features)
        except ValueError as error:
            raise KerasTeamError(
                "head",
                head.name,
                f"a head that accepts the features at the cut, shaped {tuple(features.shape)} ({error})",
            ) from error
        super().__init__(inputs, outputs, name=name, **kwargs)
        if policy is not None:
            self.dtype_policy = policy  # a functional model drops `dtype`; `compile` reads it (loss scaling)

        # === Config ===
        self.body = body
        self.head = head
        self.cut = cut
        self.inference_mode = bool(inference_mode)
        self.given_dtype = None if policy is None else policy.name

    @property
    def features(self):
        """The symbolic tensor at the cut in this model's graph: the head's input."""
        return graph.producer(self.outputs[0]).inputs[0]

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "body": keras.saving.serialize_keras_object(self.body),
            "head": keras.saving.serialize_keras_object(self.head),
            "cut": dataclasses.asdict(self.cut),
            "inference_mode": self.inference_mode,
            "dtype": self.given_dtype,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> Transferred:
        config = dict(config)
        for part in ("body", "head"):
            config[part] = refreeze(keras.saving.deserialize_keras_object(config[part], custom_objects=custom_objects))
        return cls(**config)


def transfer(
    leader: keras.Model,
    keep: int | str | CutPoint,
    head: keras.layers.Layer,
    *,
    freeze: bool | None = None,
    share: bool = False,
    inference_mode: bool = True,
    name: str | None = None,
    dtype=None,
) -> Transferred:
    """A new model: the leader's first `keep` weighted layers plus a new head.

    By default the kept layers are copied and frozen, and the leader is left
    unchanged. With `share=True` the kept layers are the leader's own (hard
    parameter sharing) and, unless `freeze=True` is given, stay trainable:
    training the result trains the leader. `freeze=True` with `share=True`
    freezes the leader's own layers too (they are the same layers).

    Args:
        leader: the trained source model.
        keep: weighted-layer depth (int), cut-point layer name or `CutPoint`;
            an invalid value raises `KerasTeamError` listing the valid ones.
        head: a layer or unbuilt model applied to the cut's features, e.g.
            `keras_team.heads.dense(num_classes)`.
        freeze: freeze the kept part (`trainable=False`); default: True
            for a copy, False with `share=True`.
        share: share the leader's layers instead of copying them.
        inference_mode: run the kept part in inference mode whatever the
            outer `training` (see `Transferred`); False for a body trained
            from scratch.
        name: model name; defaults to "<leader name>_transfer".
        dtype: a dtype policy for the new model, e.g. "mixed_float16" (see
            `Transferred`); with `share=True` it changes the leader's layers too.

    Example:
        >>> import keras_team
        >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
        >>> model = transfer(leader, keep=3, head=keras_team.heads.dense(5))
        >>> model.output_shape, model.body.trainable, leader.trainable
        ((None, 5), False, True)
    """
    cut = resolve_cut(leader, keep)
    kept = body(leader, cut, share=share)
    if freeze is None:
        freeze = not share
    if freeze:
        kept.trainable = False  # `keras_team.freeze`; freezing builds on this module, not the other way
    return Transferred(kept, head, cut, inference_mode=inference_mode, name=name or f"{leader.name}_transfer",
                       dtype=dtype)
