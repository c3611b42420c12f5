"""Small serialisable layers the Team graph is made of."""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "keras_team"


@keras.saving.register_keras_serializable(PACKAGE)
class StopGradient(keras.layers.Layer):
    """Passes its input through; no gradient flows back into the leader.

    Example:
        >>> StopGradient()(keras.ops.ones((1, 2))).shape
        (1, 2)
    """

    def call(self, inputs):
        return ops.stop_gradient(inputs)


@keras.saving.register_keras_serializable(PACKAGE)
class TemperatureSoftmax(keras.layers.Layer):
    """softmax(logits / temperature): the leader's softened probabilities.

    Example:
        >>> TemperatureSoftmax(2.0)(keras.ops.zeros((1, 4)))[0, 0]
        0.25
    """

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, logits):
        return ops.softmax(logits / self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(PACKAGE)
class Distillation(keras.layers.Layer):
    """Adds alpha * T^2 * KL(teacher_T || student_T) to the model's losses.

    Called on ``[student_logits, teacher_logits_1, ...]``; the teacher is the
    mean of the teachers' softened probabilities. Returns the student logits.

    Example:
        >>> layer = Distillation(temperature=4.0, alpha=0.5)
        >>> layer([keras.ops.zeros((1, 3)), keras.ops.zeros((1, 3))]).shape
        (1, 3)
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, inputs):
        student, *teachers = inputs
        t = self.temperature
        teacher = ops.mean(
            ops.stack([ops.softmax(ops.stop_gradient(x) / t, axis=-1) for x in teachers]), axis=0
        )
        log_student = ops.log_softmax(student / t, axis=-1)
        kl = ops.sum(teacher * (ops.log(ops.maximum(teacher, 1e-12)) - log_student), axis=-1)
        self.add_loss(self.alpha * t * t * ops.mean(kl))
        return student

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
