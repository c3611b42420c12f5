"""The serving signatures of a Team or a single model, and their stable names.

Every exported artefact (SavedModel, LiteRT file) has the same interface:

- one input, named ``inputs`` (`INPUT`), taking raw examples as the training
  data holds them (e.g. uint8 pixels shaped like the model input); the
  model's own preprocessing layers do the scaling;
- one output per team member output, named after it (a Team's output names,
  e.g. ``leader``, ``mlp``), holding float32 logits;
- signatures: ``serving_default`` (SavedModel only) returns every output, and
  one signature per member returns that member's outputs only, running just
  the part of the graph that member needs.

A single model is one member named after the model (its ``name``).
Every signature calls the model with ``training=False``: no dropout,
augmentation layer or distillation loss acts on the serving path.

Example:
    >>> model = keras_team.zoo.seed_cnn((8, 8, 1), 5, name="digits")
    >>> members(model)
    {'digits': ['digits']}
"""

from __future__ import annotations

import errno
import os

import keras
import tensorflow as tf

from keras_team.errors import KerasTeamError
from keras_team.team import Team

INPUT = "inputs"
DEFAULT_SIGNATURE = "serving_default"


def members(model: keras.Model) -> dict[str, list[str]]:
    """Member name -> the output names it owns (a Team's members, or the model itself).

    Example:
        >>> members(model)
        {'digits': ['digits']}
    """
    if not isinstance(model, keras.Model):
        raise KerasTeamError("model", type(model).__name__, "a keras.Model or keras_team.Team")
    if len(model.inputs or ()) != 1:
        raise KerasTeamError("model", f"{len(model.inputs or ())} inputs", "a built model with one input")
    if isinstance(model, Team):
        owned = {name: [name] for name in model.leaders}
        for follower in model.followers:
            owned[follower.name] = follower.output_names(list(follower.leaders or model.leaders))
        return owned
    if isinstance(_outputs(model), dict):
        return {name: [name] for name in _outputs(model)}
    if len(model.outputs) != 1:
        raise KerasTeamError("model", f"{len(model.outputs)} unnamed outputs", "one output, or a dict of named outputs")
    return {model.name: [model.name]}


def _outputs(model: keras.Model):
    """The model's output structure (a loaded Sequential has `outputs` but no `output`)."""
    return model.outputs if isinstance(model, keras.Sequential) else model.output


def input_spec(model: keras.Model, dtype: str | None = None) -> tf.TensorSpec:
    """The signature input: the model input's shape with a free batch axis, in `dtype`.

    Args:
        model: the exported model.
        dtype: dtype of the raw examples (e.g. "uint8"); default the model input's.

    Example:
        >>> input_spec(keras_team.zoo.seed_cnn((8, 8, 1), 5), "uint8")
        TensorSpec(shape=(None, 8, 8, 1), dtype=tf.uint8, name='inputs')
    """
    members(model)  # checks the model has one input
    shape = (None, *model.inputs[0].shape[1:])
    try:
        dtype = tf.as_dtype(dtype or model.inputs[0].dtype)
    except TypeError as error:
        raise KerasTeamError("input_dtype", dtype, "a numeric dtype name such as uint8 or float32") from error
    return tf.TensorSpec(shape, dtype, name=INPUT)


def _member_model(model: keras.Model, outputs: list[str]) -> keras.Model:
    """The part of `model` that computes `outputs` (shares its layers and weights)."""
    structure = _outputs(model)
    if not isinstance(structure, dict):
        return keras.Model(model.inputs, {outputs[0]: model.outputs[0]})
    return keras.Model(model.inputs, {name: structure[name] for name in outputs})


def serving_functions(model: keras.Model, spec: tf.TensorSpec, *, default: bool = True) -> dict:
    """Signature name -> `tf.function` over `spec`: `serving_default` (if `default`) and one per member.

    Example:
        >>> fns = serving_functions(model, input_spec(model, "uint8"))
        >>> sorted(fns)
        ['digits', 'serving_default']
    """
    owned = members(model)
    model_dtype = model.inputs[0].dtype

    def endpoint(graph: keras.Model):
        @tf.function(input_signature=[spec])
        def serve(inputs):
            return graph(tf.cast(inputs, model_dtype), training=False)

        return serve

    functions = {}
    if default:
        functions[DEFAULT_SIGNATURE] = endpoint(_member_model(model, [o for outs in owned.values() for o in outs]))
    for member, outputs in owned.items():
        if member == DEFAULT_SIGNATURE:
            raise KerasTeamError("member name", member, f"a name other than {DEFAULT_SIGNATURE!r}")
        functions[member] = endpoint(_member_model(model, outputs))
    return functions


def write_archive(model: keras.Model, path, spec: tf.TensorSpec, *, default: bool = True) -> None:
    """Write a SavedModel of `model` at `path` with the signatures of `serving_functions`.

    Example:
        >>> write_archive(model, f"{tmp}/digits/1", input_spec(model, "uint8"))
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, function in serving_functions(model, spec, default=default).items():
        archive.add_endpoint(name, function)
    try:
        archive.write_out(str(path), verbose=False)
    except (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError) as error:
        refused = _refused_write(error)
        if refused is None:
            raise
        raise OSError(refused, os.strerror(refused), str(path)) from error


# What TensorFlow's file writers say (its message ends with strerror) for a write the disk refused.
_REFUSED_WRITES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def _refused_write(error: tf.errors.OpError) -> int | None:
    """The errno of a full, read-only or forbidden disk behind a TensorFlow error, else None."""
    return next((code for code in _REFUSED_WRITES if os.strerror(code) in error.message), None)
