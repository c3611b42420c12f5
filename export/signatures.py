"""The serving signatures of a Team or a single model, and their stable names.

Every exported artefact (SavedModel, LiteRT file) has the same interface:

- one input, named ``inputs`` (`INPUT`), taking raw examples as the training
  data holds them (e.g. uint8 pixels shaped like the model input); the
  model's own preprocessing layers do the scaling;
- one output per team member output, named after it (a Team's output names,
  e.g. ``leader``, ``mlp``), holding float32 logits;
- ``serving_default`` returns every output.

A SavedModel also has one signature per member, returning that member's
outputs only and running just the part of the graph that member needs, and
each of its signatures returns, beside the logits, ``probabilities`` (the
softmax; ``serving_default``: the team ensemble, weighted as the report's
`keras_team.Team.ensemble_weights`; a member of several outputs: their mean),
the `TOP_K` most probable classes (``top_class_ids`` int32,
``top_classes`` their names, ``top_scores``), and a ``classify`` signature
serves TF Serving's Classify API: serialized `tf.train.Example`s in
(feature ``inputs``: an example's values flattened, int64 for integer
inputs, else float), ``classes`` (every class name) and ``scores`` (the
ensemble's probabilities) out. The class names ship as the asset
``assets/labels.txt``. A LiteRT file has ``serving_default`` only (the
interpreter's `get_signature_runner()` takes no name only for a file of one
signature) and logits only; its labels sit beside it (`keras_team.export.litert`).

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
import pathlib
import tempfile
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from keras_team.errors import KerasTeamError
from keras_team.files import TEMPORARY_PREFIX, write_bytes
from keras_team.team import Team

INPUT = "inputs"
DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_SIGNATURE = "classify"
LABELS_FILE = "labels.txt"
# What every SavedModel signature returns beside the logits, and the classify signature's outputs (TF Serving's names).
PROBABILITIES, TOP_CLASS_IDS, TOP_CLASSES, TOP_SCORES = "probabilities", "top_class_ids", "top_classes", "top_scores"
CLASS_OUTPUTS = (PROBABILITIES, TOP_CLASS_IDS, TOP_CLASSES, TOP_SCORES)
CLASSES, SCORES = "classes", "scores"
TOP_K = 5  # top classes per example (at most the number of classes)


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
        return model.member_outputs()
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


def class_names_of(model: keras.Model, class_names: Sequence[str] | None = None) -> list[str]:
    """The model's class names, one per logit: `class_names` checked, or "0", "1", ... when None.

    Example:
        >>> class_names_of(model)
        ['0', '1', '2', '3', '4']
    """
    (width,) = {output.shape[-1] for output in model.outputs}
    if class_names is None:
        return [str(i) for i in range(width)]
    names = [str(name) for name in class_names]
    if len(names) != width or any("\n" in name or "\r" in name for name in names):
        raise KerasTeamError("class_names", names, f"{width} names, one per class, each on one line")
    return names


def ensemble_shares(names: list[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    """Output name -> its share of the ensemble (equal when `weights` is None) as `Team.ensemble` weighs; 0s left out.

    Example:
        >>> ensemble_shares(["leader", "mlp"], {"leader": 3.0, "mlp": 1.0})
        {'leader': 0.75, 'mlp': 0.25}
    """
    weights = {name: 1.0 for name in names} if weights is None else dict(weights)
    values = [float(weights.get(name, 0.0)) for name in names]
    if set(weights) - set(names) or min(values) < 0 or sum(values) <= 0:
        raise KerasTeamError("weights", weights, f"weights >= 0, not all 0, of the outputs {', '.join(names)}")
    return {name: value / sum(values) for name, value in zip(names, values) if value > 0}


def _class_outputs(logits: dict, shares: dict[str, float], labels: tf.lookup.StaticHashTable) -> dict:
    """Probabilities (the `shares`-weighted mean of the softmaxes) and the top classes: ids, names, scores."""
    probabilities = tf.add_n([share * tf.nn.softmax(logits[name]) for name, share in shares.items()])
    scores, ids = tf.math.top_k(probabilities, k=min(TOP_K, probabilities.shape[-1]))
    return {PROBABILITIES: probabilities, TOP_CLASS_IDS: ids, TOP_CLASSES: labels.lookup(tf.cast(ids, tf.int64)),
            TOP_SCORES: scores}


def serving_functions(model: keras.Model, spec: tf.TensorSpec, *, labels: tf.lookup.StaticHashTable | None = None,
                      weights: Mapping[str, float] | None = None) -> dict:
    """Signature name -> `tf.function`: `serving_default`, one per member, and with `labels` `classify`.

    Args:
        model: the Keras model or Team.
        spec: the input (`input_spec`).
        labels: class id -> name table; with it every signature adds
            probabilities and the top classes beside the logits, and
            `classify` is added (TF Serving's Classify API).
        weights: output name -> weight of the ensemble `serving_default`
            and `classify` score (see `keras_team.Team.ensemble_weights`);
            default equal.

    Example:
        >>> fns = serving_functions(model, input_spec(model, "uint8"))
        >>> sorted(fns)
        ['digits', 'serving_default']
    """
    owned = members(model)
    every = [o for outs in owned.values() for o in outs]
    reserved = sorted({*[n for n in owned if n in (DEFAULT_SIGNATURE, CLASSIFY_SIGNATURE)],
                       *[o for o in every if o in CLASS_OUTPUTS]})
    if reserved:
        taken = ", ".join((DEFAULT_SIGNATURE, CLASSIFY_SIGNATURE, *CLASS_OUTPUTS))
        raise KerasTeamError("member name", reserved[0], f"a name other than {taken}")
    model_dtype = model.inputs[0].dtype
    ensemble = ensemble_shares(every, weights)

    def endpoint(graph: keras.Model, shares: dict[str, float]):
        @tf.function(input_signature=[spec])
        def serve(inputs):
            logits = graph(tf.cast(inputs, model_dtype), training=False)
            return logits if labels is None else {**logits, **_class_outputs(logits, shares, labels)}

        return serve

    functions = {DEFAULT_SIGNATURE: endpoint(_member_model(model, every), ensemble)}
    for member, outputs in owned.items():
        functions[member] = endpoint(_member_model(model, outputs), ensemble_shares(outputs, None))
    if labels is not None and spec.shape[1:].is_fully_defined():
        functions[CLASSIFY_SIGNATURE] = _classify(_member_model(model, every), spec, ensemble, labels)
    return functions


def _classify(graph: keras.Model, spec: tf.TensorSpec, shares: dict[str, float],
              labels: tf.lookup.StaticHashTable) -> tf.types.experimental.GenericFunction:
    """TF Serving's Classify API: serialized `tf.train.Example`s in (feature `inputs`: the example's values,
    flattened), every class name (`classes`) and its ensemble probability (`scores`) out."""
    feature = tf.io.FixedLenFeature(spec.shape[1:], tf.int64 if spec.dtype.is_integer else tf.float32)
    model_dtype = graph.inputs[0].dtype

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT)])
    def classify(inputs):
        examples = tf.io.parse_example(inputs, {INPUT: feature})[INPUT]
        logits = graph(tf.cast(tf.cast(examples, spec.dtype), model_dtype), training=False)
        scores = _class_outputs(logits, shares, labels)[PROBABILITIES]
        ids = tf.range(tf.shape(scores)[-1], dtype=tf.int64)
        return {CLASSES: tf.tile(labels.lookup(ids)[tf.newaxis], [tf.shape(scores)[0], 1]), SCORES: scores}

    return classify


def write_archive(model: keras.Model, path, spec: tf.TensorSpec, *, classes: bool = True,
                  class_names: Sequence[str] | None = None, weights: Mapping[str, float] | None = None) -> None:
    """Write a SavedModel of `model` at `path` with the signatures of `serving_functions`.

    With `classes` (the default) the class names ship as the asset
    ``assets/labels.txt`` (one per line, in class order; default "0", "1", ...),
    every signature adds probabilities and top classes, and `classify` is
    marked with TF Serving's classify method; without, the signatures return
    logits only (what the LiteRT converter reads).

    Example:
        >>> write_archive(model, f"{tmp}/digits/1", input_spec(model, "uint8"), class_names="56789")
        >>> print(pathlib.Path(f"{tmp}/digits/1/assets/labels.txt").read_text().split())
        ['5', '6', '7', '8', '9']
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    path = pathlib.Path(path)
    with tempfile.TemporaryDirectory(prefix=TEMPORARY_PREFIX) as scratch:  # the labels, until the archive copies them
        labels = None
        if classes:
            names = pathlib.Path(scratch) / LABELS_FILE
            names.write_text("".join(f"{name}\n" for name in class_names_of(model, class_names)))
            labels = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                str(names), tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")
            holder = tf.Module()
            holder.labels = labels
            archive.track(holder)
        for name, function in serving_functions(model, spec, labels=labels, weights=weights).items():
            archive.add_endpoint(name, function)
        try:
            archive.write_out(str(path), verbose=False)
        except (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError) as error:
            refused = _refused_write(error)
            if refused is None:
                raise
            raise OSError(refused, os.strerror(refused), str(path)) from error
    if classes:
        _mark_classify(path)


def _mark_classify(path: pathlib.Path) -> None:
    """Give `classify` TF Serving's classify method name (tf.saved_model.save names every signature "predict")."""
    proto_file = path / "saved_model.pb"
    saved = saved_model_pb2.SavedModel.FromString(proto_file.read_bytes())
    for graph in saved.meta_graphs:
        if CLASSIFY_SIGNATURE in graph.signature_def:
            graph.signature_def[CLASSIFY_SIGNATURE].method_name = tf.saved_model.CLASSIFY_METHOD_NAME
    write_bytes(proto_file, saved.SerializeToString())


# What TensorFlow's file writers say (its message ends with strerror) for a write the disk refused.
_REFUSED_WRITES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def _refused_write(error: tf.errors.OpError) -> int | None:
    """The errno of a full, read-only or forbidden disk behind a TensorFlow error, else None."""
    return next((code for code in _REFUSED_WRITES if os.strerror(code) in error.message), None)
