"""Small serialisable layers the Team graph is made of."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_team"


def _spec_like(layer: keras.layers.Layer, x) -> keras.KerasTensor:
    """The spec of `x` as `layer` returns it: floating tensors in its compute dtype, as `__call__` casts them."""
    dtype = layer.compute_dtype if keras.backend.is_float_dtype(x.dtype) else x.dtype
    return keras.KerasTensor(x.shape, dtype=dtype)


@keras.saving.register_keras_serializable(PACKAGE)
class StopGradient(keras.layers.Layer):
    """Passes its input through; no gradient flows back into the leader.

    Example:
        >>> tuple(StopGradient()(keras.ops.ones((1, 2))).shape)
        (1, 2)
    """

    def call(self, inputs):
        return ops.stop_gradient(inputs)

    def compute_output_spec(self, inputs):
        return _spec_like(self, inputs)


@keras.saving.register_keras_serializable(PACKAGE)
class TemperatureSoftmax(keras.layers.Layer):
    """softmax(logits / temperature): the leader's softened probabilities.

    Example:
        >>> float(TemperatureSoftmax(2.0)(keras.ops.zeros((1, 4)))[0, 0])
        0.25
    """

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, logits):
        return ops.softmax(logits / self.temperature, axis=-1)

    def compute_output_spec(self, logits):
        return _spec_like(self, logits)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(PACKAGE)
class Distillation(keras.layers.Layer):
    """Adds alpha * T^2 * KL(teacher_T || student_T) to the model's losses (alpha: `Distill.kl_weight`).

    Called on ``[student_logits, teacher_logits_1, ...]``; the teacher is the
    mean of the teachers' softened probabilities. Returns the student logits
    (in the layer's compute dtype). The loss is computed in float32 whatever
    the dtype policy, and added only while training: inference and serving
    pass the student logits through at no cost.

    Example:
        >>> layer = Distillation(temperature=1.0, alpha=0.5)
        >>> student, teacher = keras.ops.zeros((1, 2)), keras.ops.log([[0.2, 0.8]])
        >>> _ = layer([student, teacher], training=True)
        >>> round(float(layer.losses[0]), 4)  # 0.5 * KL([0.2, 0.8] || [0.5, 0.5])
        0.0964
        >>> _ = layer([student, teacher])  # inference: no loss
        >>> layer.losses
        []
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, inputs, training=None):
        student, *teachers = inputs
        if not training:
            return student
        t = self.temperature
        # float32: in float16 the 1e-12 floor is 0 and log(0) turns the loss into NaN.
        teacher = ops.mean(
            ops.stack([ops.softmax(ops.cast(ops.stop_gradient(x), "float32") / t, axis=-1) for x in teachers]),
            axis=0,
        )
        log_student = ops.log_softmax(ops.cast(student, "float32") / t, axis=-1)
        kl = ops.sum(teacher * (ops.log(ops.maximum(teacher, 1e-12)) - log_student), axis=-1)
        self.add_loss(self.alpha * t * t * ops.mean(kl))
        return student

    def compute_output_spec(self, inputs, training=None):
        return _spec_like(self, inputs[0])

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}


@keras.saving.register_keras_serializable(PACKAGE)
class InferenceMode(keras.layers.Wrapper):
    """Runs the wrapped layer or model in inference mode, whatever the caller's `training`.

    Dropout, GaussianNoise and stochastic depth inside are off, and batch
    norm uses (and never updates) its moving statistics, also while the
    outer model trains. `trainable` is untouched: weights inside still learn
    where they are trainable, as in the Keras transfer-learning guide's
    `base(x, training=False)`. That call alone does not hold in Keras 3,
    where a functional model passes its own `training` to every nested
    layer; this wrapper's `call` takes no `training` argument, so none is
    passed, and calls the wrapped layer with `training=False`.

    Example:
        >>> noisy = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.9)])
        >>> x = keras.ops.ones((1, 4))
        >>> bool(keras.ops.all(InferenceMode(noisy)(x, training=True) == x))
        True
    """

    def call(self, inputs):
        return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


@keras.saving.register_keras_serializable(PACKAGE)
class LeaderTaps(keras.layers.Layer):
    """A leader's own output, and its taps computed in inference mode.

    Wraps a tap model (a model sharing the leader's layers whose outputs are
    a dict holding at least ``"logits"``). Returns ``(logits, taps)``. At
    inference the leader runs once and its logits are also its output. While
    training, the leader's output comes from a training-mode call (dropout,
    batch statistics) and the taps from an inference-mode call, so followers
    read exactly what a cache of the taps holds.

    Example:
        >>> leader = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.5),
        ...                            keras.layers.Dense(2, kernel_initializer="ones")])
        >>> taps = keras.Model(leader.inputs, {"logits": leader.outputs[0]})
        >>> own, tapped = LeaderTaps(taps)(keras.ops.ones((1, 3)), training=True)
        >>> keras.ops.convert_to_numpy(tapped["logits"]).tolist()  # no dropout on the taps
        [[3.0, 3.0]]
    """

    def __init__(self, taps: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.taps = taps

    def build(self, input_shape):
        self.built = True  # the wrapped model is built already

    def call(self, inputs, training=None):
        taps = self.taps(inputs, training=False)
        own = self.taps(inputs, training=True)["logits"] if training else taps["logits"]
        return own, taps

    def compute_output_spec(self, inputs, training=None):
        taps = self.taps.compute_output_spec(inputs)
        return taps["logits"], taps

    def get_config(self):
        return {**super().get_config(), "taps": keras.saving.serialize_keras_object(self.taps)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["taps"] = keras.saving.deserialize_keras_object(config["taps"])
        return cls(**config)


@keras.saving.register_keras_serializable(PACKAGE)
class FitImages(keras.layers.Layer):
    """Resizes images and converts their colour (grey <-> RGB, RGBA -> RGB) to a model's input.

    Put in front of a model whose input differs from the images a client
    has, so the exported model takes those images as they are. Resizing is
    `keras.ops.image.resize`; grey becomes RGB by repeating the channel, RGB
    becomes grey by `keras.ops.image.rgb_to_grayscale`, alpha is dropped.

    Args:
        height, width, channels: the shape the images are fitted to.
        interpolation: of the resize, e.g. "bilinear" or "nearest".

    Example:
        >>> tuple(FitImages(32, 32, 3)(keras.ops.ones((2, 8, 8, 1))).shape)
        (2, 32, 32, 3)
    """

    CONVERSIONS = {(1, 3), (3, 1), (4, 3), (4, 1)}
    """(from, to) channel counts it converts, besides keeping them."""

    def __init__(self, height: int, width: int, channels: int, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.height, self.width, self.channels = int(height), int(width), int(channels)
        self.interpolation = interpolation

    def build(self, input_shape):
        have = input_shape[-1]
        if have != self.channels and (have, self.channels) not in self.CONVERSIONS:
            raise ValueError(f"cannot convert images of {have} channels to {self.channels}; "
                             f"conversions: {sorted(self.CONVERSIONS)}")
        self.built = True

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        have = x.shape[-1]
        if have == 4 and self.channels != 4:
            x = x[..., :3]
        if have == 1 and self.channels == 3:
            x = ops.repeat(x, 3, axis=-1)
        elif x.shape[-1] == 3 and self.channels == 1:
            x = ops.image.rgb_to_grayscale(x)
        if tuple(x.shape[1:3]) != (self.height, self.width):
            x = ops.image.resize(x, (self.height, self.width), interpolation=self.interpolation)
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.height, self.width, self.channels)

    def describe(self, input_shape: tuple) -> str:
        """The step in words, e.g. "resized (8, 8, 1) -> (32, 32, 3), grey -> RGB"."""
        have, colours = input_shape[-1], {1: "grey", 3: "RGB", 4: "RGBA"}
        shape = (self.height, self.width, self.channels)
        converted = (f", {colours.get(have, have)} -> {colours.get(self.channels, self.channels)}"
                     if have != self.channels else "")
        return f"resized {tuple(input_shape)} -> {shape} ({self.interpolation}){converted}"

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "channels": self.channels,
                "interpolation": self.interpolation}


@keras.saving.register_keras_serializable(PACKAGE)
class ApplicationPreprocessing(keras.layers.Layer):
    """A `keras.applications` model's own `preprocess_input`, as a layer: the model takes 0..255 pixels.

    Args:
        application: the name of the model in `keras.applications`, e.g.
            "ResNet50V2", whose module's `preprocess_input` is applied.

    Example:
        >>> layer = ApplicationPreprocessing("ResNet50V2")   # scales 0..255 to -1..1
        >>> keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor([[0.0, 255.0, 127.5]]))).tolist()
        [[-1.0, 1.0, 0.0]]
    """

    def __init__(self, application: str, **kwargs):
        super().__init__(**kwargs)
        self.application = application
        self.preprocess_input = _preprocess_input(application)

    def call(self, images):
        return self.preprocess_input(ops.cast(images, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "application": self.application}


def _preprocess_input(application: str):
    """The `preprocess_input` of the public `keras.applications` module defining `application`."""
    module = getattr(keras.applications, application).__module__.rsplit(".", 1)[-1]  # e.g. resnet_v2
    return getattr(keras.applications, module).preprocess_input


def scales_its_own_pixels(application: str) -> bool:
    """Whether a `keras.applications` model needs no `preprocess_input` before it.

    Families whose models scale their own pixels (EfficientNet, ConvNeXt,
    MobileNetV3, RegNet ...) have a `preprocess_input` that changes nothing.

    Example:
        >>> scales_its_own_pixels("MobileNetV3Small"), scales_its_own_pixels("ResNet50V2")
        (True, False)
    """
    probe = np.array([[[[0.0, 127.0, 255.0]]]], "float32")
    return bool(np.array_equal(_preprocess_input(application)(probe.copy()), probe))
