"""New task heads to put on a cut leader.

Heads are unbuilt `keras.Sequential` stacks: their input width comes from the
features they are called on. Heads are for classification and end in logits
(the Team, its cache, ensemble and report are built for classes).

`cosine` is the few-shot head: a cosine classifier with a learned scale whose
class weights `imprint` sets to the normalised class means of the training
features (weight imprinting, Qi et al., CVPR 2018); `prototype` builds one
already imprinted.

Example:
    >>> head = dense(10, hidden=(64,), dropout=0.2)
    >>> tuple(head(keras.ops.zeros((2, 4, 4, 16))).shape)
    (2, 10)
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

from keras_team.errors import KerasTeamError
from keras_team.layers import PACKAGE

# The loss of every classifier keras-team builds or trains: they end in logits.
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@keras.saving.register_keras_serializable(PACKAGE)
class SmoothedLoss(keras.losses.Loss):
    """`LOSS` with label smoothing: cross-entropy of logits against integer labels mixed with the uniform distribution.

    What `keras.losses.CategoricalCrossentropy(from_logits=True,
    label_smoothing=...)` computes for one-hot labels (Szegedy et al., CVPR
    2016), for the integer labels every keras-team task has.

    Args:
        label_smoothing: the weight of the uniform distribution, in [0, 1).

    Example:
        >>> logits, labels = np.array([[2.0, 0.0], [0.0, 3.0]]), np.array([0, 1])
        >>> round(float(SmoothedLoss(0.0)(labels, logits)), 4) == round(float(LOSS(labels, logits)), 4)
        True
        >>> float(SmoothedLoss(0.2)(labels, logits)) > float(LOSS(labels, logits))  # confident logits cost more
        True
    """

    def __init__(self, label_smoothing: float = 0.1, name: str = "smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not (isinstance(label_smoothing, numbers.Real) and 0 <= label_smoothing < 1):
            raise KerasTeamError("label_smoothing", label_smoothing, "a number in [0, 1)")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(labels, y_pred, from_logits=True,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


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
    stack = _hidden_stack(hidden, dropout, activation, seed)
    kernel = "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=seed)
    stack.append(layers.Dense(num_classes, kernel_initializer=kernel, name="logits", dtype="float32"))
    return keras.Sequential(stack, name=name)


def _hidden_stack(hidden: Sequence[int], dropout: float, activation: str, seed: int | None) -> list:
    """Flatten, the hidden Dense layers and dropout: what comes before a head's logits layer."""

    def kernel(index: int):  # a seed per layer: layers of one shape must not start equal
        return "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=seed + index)

    stack = [layers.Flatten(name="flatten")]
    for index, units in enumerate(hidden, start=1):
        stack.append(layers.Dense(units, activation=activation, kernel_initializer=kernel(index), name=f"hidden{index}"))
    if dropout:
        stack.append(layers.Dropout(dropout, seed=seed, name="dropout"))
    return stack


@keras.saving.register_keras_serializable(PACKAGE)
class CosineLogits(layers.Layer):
    """Logits ``scale * cos(features, w_c)``: a cosine classifier with a learned scale.

    Both the features and each class's weight vector `w_c` (a column of
    `kernel`) are L2-normalised, so a class scores by direction alone;
    `scale` (trained with the weights) sets how peaked the softmax is.

    Args:
        units: classes (width of the logits).
        scale: the scale's initial value.
        seed: seeds the initial kernel; None draws it from the global state.

    Example:
        >>> layer = CosineLogits(2, scale=10.0)
        >>> layer.build((None, 2))
        >>> _ = layer.kernel.assign(np.eye(2))  # class 0 along the first axis, class 1 along the second
        >>> np.asarray(layer(np.array([[3.0, 0.0], [1.0, 1.0]])), dtype="float64").round(2).tolist()
        [[10.0, 0.0], [7.07, 7.07]]
    """

    def __init__(self, units: int, scale: float = 10.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.initial_scale = float(scale)
        self.seed = seed

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer=keras.initializers.GlorotUniform(seed=self.seed))
        self.scale = self.add_weight(name="scale", shape=(), initializer=keras.initializers.Constant(self.initial_scale))

    def call(self, inputs):
        features = ops.normalize(ops.cast(inputs, self.compute_dtype), axis=-1)
        return self.scale * ops.matmul(features, ops.normalize(self.kernel, axis=0))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "scale": self.initial_scale, "seed": self.seed}


def cosine(
    num_classes: int,
    *,
    hidden: Sequence[int] = (),
    dropout: float = 0.0,
    activation: str = "relu",
    scale: float = 10.0,
    name: str = "head",
    seed: int | None = None,
) -> keras.Sequential:
    """Flatten, `hidden` Dense layers, dropout, then a cosine classifier (`CosineLogits`).

    Call `imprint` on the model it ends (or on it, with features) to set
    its class weights from the training examples before training.

    Args:
        num_classes: classes of the target task.
        hidden, dropout, activation: as for `dense`.
        scale: initial value of the learned scale of the cosine logits.
        name: layer name of the head.
        seed: seeds the head's initial weights and dropout.

    Example:
        >>> head = cosine(3)
        >>> tuple(head(keras.ops.zeros((2, 4, 4, 16))).shape), head.layers[-1].name
        ((2, 3), 'logits')
    """
    _check(num_classes, dropout, activation)
    if not (isinstance(scale, numbers.Real) and 0 < scale < float("inf")):
        raise KerasTeamError("scale", scale, "a finite number > 0")
    stack = _hidden_stack(hidden, dropout, activation, seed)
    stack.append(CosineLogits(num_classes, scale=scale, seed=seed, name="logits", dtype="float32"))
    return keras.Sequential(stack, name=name)


@keras.saving.register_keras_serializable(PACKAGE)
class Standardize(layers.Layer):
    """Each feature centred and scaled by the task's mean and spread (`adapt`), then the whole vector L2-normalised.

    The statistics are weights, set by `adapt` (before that: mean 0, scale 1); a
    probe on such features is well conditioned whatever the cut's scale
    (normalised features as SimpleShot's, Wang et al. 2019).

    Example:
        >>> layer = Standardize()
        >>> head = keras.Sequential([keras.Input((3,)), layer])
        >>> adapt(head, np.array([[1.0, 0, 5], [3.0, 0, 5]]))
        >>> np.round(head(np.array([[3.0, 0, 5]])), 3).tolist()
        [[1.0, 0.0, 0.0]]
    """

    def build(self, input_shape):
        self.mean = self.add_weight(shape=(input_shape[-1],), initializer="zeros", trainable=False, name="mean")
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", trainable=False, name="scale")
        self._seen = None  # what `adapt` records (eager calls only)

    def call(self, x):
        if self._seen is not None:
            self._seen.append(ops.convert_to_numpy(x))
        return ops.normalize((x - self.mean) * self.scale, axis=-1)


def _standardizers(layer: keras.Layer):
    if isinstance(layer, Standardize):
        yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _standardizers(inner)


def adapt(model: keras.Layer, *xs, batch_size: int = 1024) -> None:
    """Set every `Standardize` layer of `model` from its inputs on the examples of `xs`: mean and 1 / spread.

    Each of `xs` is an array, or a dict of arrays keyed like the model's
    inputs: the training split, and any further unlabelled examples of the
    task (`probe.fit_probe` adds the validation split's at one shot). A
    feature's spread is its standard deviation plus 0.1% of the mean one, so
    a feature that never varies in these examples is not blown up where it does.
    """
    found = list(_standardizers(model))
    if not found:
        return
    for layer in found:
        layer._seen = []
    try:
        for x in xs:
            count = len(next(iter(x.values())) if isinstance(x, dict) else x)
            for start in range(0, count, batch_size):
                part = ({k: v[start:start + batch_size] for k, v in x.items()} if isinstance(x, dict)
                        else x[start:start + batch_size])
                model(part, training=False)
        for layer in found:
            seen = np.concatenate(layer._seen).astype("float64")
            spread = seen.std(axis=0)
            layer.mean.assign(seen.mean(axis=0))
            layer.scale.assign(1.0 / (spread + 1e-3 * spread.mean() + 1e-12))
    finally:
        for layer in found:
            layer._seen = None


POOLS = ("flatten", "mean", "mean_std")
"""How `probe` turns a feature map into a vector: every value, or each channel's mean (and spread) over positions."""


@keras.saving.register_keras_serializable(PACKAGE)
class SpatialPool(layers.Layer):
    """Each channel's mean over the spatial axes, and with ``"mean_std"`` its standard deviation too.

    A vector (rank 2) passes unchanged. Pooled features do not depend on
    where in the image a pattern lies, and the spread adds each channel's
    texture statistics (as style features do); a flattened map keeps the
    layout, which suits centred images such as digits.

    Example:
        >>> x = np.array([[[[1.0], [3.0]]]])  # one 1x2 map, one channel
        >>> keras.ops.convert_to_numpy(SpatialPool("mean_std")(x)).tolist()
        [[2.0, 1.0]]
    """

    def __init__(self, mode: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLS[1:]:
            raise KerasTeamError("pool", mode, f"one of {', '.join(POOLS[1:])}")
        self.mode = mode

    def call(self, x):
        if len(x.shape) == 2:
            return x
        axes = tuple(range(1, len(x.shape) - 1))
        mean = ops.mean(x, axis=axes)
        if self.mode == "mean":
            return mean
        return ops.concatenate([mean, ops.sqrt(ops.var(x, axis=axes) + 1e-12)], axis=-1)  # a finite gradient at 0

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


def probe(num_classes: int, *, pool: str = "flatten", name: str = "head") -> keras.Sequential:
    """The linear probe's head: the features as a vector, `Standardize`, the logits (fit it with `probe.fit_probe`).

    Args:
        num_classes: the logits' width.
        pool: how a feature map becomes a vector: ``"flatten"`` (every value, where it lies),
            ``"mean"`` or ``"mean_std"`` (`SpatialPool`: each channel's statistics over positions).
        name: the head's name.

    Example:
        >>> tuple(probe(3)(keras.ops.zeros((2, 4, 4, 16))).shape)
        (2, 3)
        >>> tuple(probe(3, pool="mean_std").layers[0](keras.ops.zeros((2, 4, 4, 16))).shape)
        (2, 32)
    """
    _check(num_classes, 0.0, "relu")
    if pool not in POOLS:
        raise KerasTeamError("pool", pool, f"one of {', '.join(POOLS)}")
    vector = layers.Flatten() if pool == "flatten" else SpatialPool(pool, name="pool")
    return keras.Sequential([vector, Standardize(name="standardize"),
                             layers.Dense(num_classes, name="logits", dtype="float32")], name=name)


def class_means(features, labels, num_classes: int) -> np.ndarray:
    """The L2-normalised mean of each class's L2-normalised feature vectors, shape (num_classes, width).

    Features of any shape are flattened per example. Every class needs at
    least one example.

    Example:
        >>> class_means(np.array([[2.0, 0.0], [0.0, 5.0], [3.0, 3.0]]), np.array([0, 1, 1]), 2).round(3).tolist()
        [[1.0, 0.0], [0.383, 0.924]]
    """
    features = np.asarray(features, dtype="float64").reshape(len(features), -1)
    features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels).reshape(-1)
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing or len(labels) != len(features):
        raise KerasTeamError("labels", f"{len(labels)} labels, classes {missing} missing" if missing else f"{len(labels)} labels",
                             f"one label per example ({len(features)}) and every class 0..{num_classes - 1} present")
    means = np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def _cosine_head(model: keras.Layer) -> tuple[keras.Layer, list]:
    """The head of `model` that ends in `CosineLogits`, and the layers before that layer in it."""
    head = getattr(model, "head", model)  # a transferred model, or the head itself
    stack = head.layers if isinstance(head, keras.Sequential) else [head]
    if not stack or not isinstance(stack[-1], CosineLogits):
        raise KerasTeamError("model", getattr(model, "name", model),
                             "a model whose head ends in a cosine classifier (keras_team.heads.cosine)")
    return stack[-1], stack[:-1]


def imprint(model: keras.Layer, x, y, *, batch_size: int = 256) -> keras.Layer:
    """Set a cosine head's class weights to the class means of its features on `x` (weight imprinting).

    Each class's weight vector becomes the normalised mean of the normalised
    features of its examples (Qi et al., CVPR 2018): before any training the
    head is a nearest-class-mean classifier. Imprint from the training split
    only.

    Args:
        model: a transferred model (`keras_team.transfer`) whose head is
            `cosine(...)`, taking `x` as the model's inputs; or the head
            itself (e.g. a follower's), taking `x` as its input features.
        x: the examples (model inputs, or the head's input features).
        y: their class labels; every class needs one.
        batch_size: batch size of the pass computing the features.

    Returns:
        `model`, its head's weights set.

    Example:
        >>> student = keras_team.transfer(leader, keep=3, head=cosine(5))
        >>> student = imprint(student, x, y)
        >>> float(np.mean(np.argmax(student.predict(x, verbose=0), axis=-1) == y)) > 0.5
        True
    """
    layer, before = _cosine_head(model)
    body = getattr(model, "body", None)
    features = body.predict(x, batch_size=batch_size, verbose=0) if body is not None else np.asarray(x)
    for step in before:
        features = step(features)
    features = keras.ops.convert_to_numpy(features)
    if not layer.built:
        layer.build(features.shape)
    layer.kernel.assign(class_means(features, y, layer.units).T)
    return model


def prototype(features, labels, *, num_classes: int | None = None, scale: float = 10.0,
              name: str = "head") -> keras.Sequential:
    """A cosine head on `features`, imprinted with their class means: a trainable nearest-class-mean classifier.

    Args:
        features: training features (e.g. a leader's tap or its cut).
        labels: their class labels.
        num_classes: classes (default: the largest label + 1).
        scale: initial value of the learned scale.
        name: layer name of the head.

    Example:
        >>> features = np.array([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.2, 0.8]])
        >>> head = prototype(features, np.array([0, 0, 1, 1]))
        >>> np.argmax(keras.ops.convert_to_numpy(head(np.array([[5.0, 1.0], [0.1, 2.0]]))), axis=-1).tolist()
        [0, 1]
    """
    labels = np.asarray(labels)
    head = cosine(int(labels.max()) + 1 if num_classes is None else num_classes, scale=scale, name=name)
    head.build((None, *np.shape(features)[1:]))
    return imprint(head, features, labels)


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
