"""Reference models: the write-up's CNN, an MLP follower, a residual CNN, and any `keras.applications` network.

Every model takes raw pixels (uint8 0..255) and scales them itself; classifiers
end in logits (no softmax), so `logits` and `probs` taps are exact.

Example:
    >>> leader = seed_cnn((32, 32, 3), num_classes=10)   # the write-up's SimpleCNN
    >>> [layer.name for layer in leader.layers][1:4]
    ['conv1', 'pool1', 'conv2']
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import keras
from keras import layers

from keras_team import graph, heads
from keras_team.errors import KerasTeamError
from keras_team.layers import ApplicationPreprocessing, FitImages, scales_its_own_pixels

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


WEIGHTS = ("imagenet", None)
DOWNLOAD_FAILED = "URL fetch failure"
"""How the message of `keras.utils.get_file`'s failed download starts."""
SMALLEST_SIDE = 32
"""The side `application` enlarges smaller images to by default: the least most applications take."""


def applications() -> list[str]:
    """The model names of `keras.applications`, the values `application` takes.

    Example:
        >>> "MobileNetV3Small" in applications() and "ResNet50V2" in applications()
        True
    """
    return sorted(name for name in dir(keras.applications) if name[0].isupper())


def application(
    application: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    weights: str | None = None,
    application_shape: Sequence[int] | None = None,
    name: str = "leader",
) -> keras.Model:
    """A `keras.applications` network as a leader: raw pixels in, logits for `num_classes` out.

    The model's layers, all in one graph (so `cut_points` sees the
    application's own blocks): the `pixels` input; `fit_images`
    (`keras_team.layers.FitImages`) when the images differ from the
    application's input, resizing them and converting grey <-> RGB; the
    application's own pixel scaling, inside the model (its
    `include_preprocessing`, or its module's `preprocess_input` as the layer
    `preprocess_input`); the application without its top, average-pooled;
    a new `logits` Dense layer. Keras' auto-named layers (`activation_17`)
    get the same names in every build (`keras_team.graph.fresh_names`).
    Batch norm takes the zoo's momentum (`BN_MOMENTUM`), so that statistics
    trained from scratch (weights None, or the scratch baseline copying this
    architecture) settle within the few steps of a small dataset; a frozen
    pretrained body runs in inference mode, where momentum plays no part.

    Args:
        application: a model name of `keras.applications`, e.g.
            "MobileNetV3Small", "EfficientNetV2B0", "ResNet50V2".
        input_shape: (height, width, channels) of the images the model takes.
        num_classes: outputs of the `logits` layer.
        weights: "imagenet" (downloaded once into Keras' cache) or None
            (random).
        application_shape: the application's input; default `input_shape`
            with sides under 32 enlarged to 32 and 3 channels.
        name: model name.

    Example:
        >>> leader = application("MobileNetV3Small", (8, 8, 1), num_classes=5)
        >>> [layer.name for layer in leader.layers[:3]], leader.output_shape
        (['pixels', 'fit_images', 'rescaling'], (None, 5))
    """
    if application not in applications():
        raise KerasTeamError("application", application, f"a model of keras.applications: {', '.join(applications())}")
    if weights not in WEIGHTS:
        raise KerasTeamError("weights", weights, "imagenet or None")
    images = tuple(int(n) for n in input_shape)
    if application_shape is None:
        application_shape = (*(max(side, SMALLEST_SIDE) for side in images[:2]), 3)
    shape = tuple(int(n) for n in application_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise KerasTeamError("input_shape", list(application_shape), "height, width, channels: three ints >= 1")
    if images[-1] != shape[-1] and (images[-1], shape[-1]) not in FitImages.CONVERSIONS:
        raise KerasTeamError("input_shape", list(shape), f"{images[-1]} channels, as the images have, or one of "
                             f"the conversions {sorted(FitImages.CONVERSIONS)} (from, to)")

    inputs = keras.Input(images, name="pixels")
    x = inputs
    if images != shape:
        x = FitImages(*shape, name="fit_images")(x)
    constructor = getattr(keras.applications, application)
    options = {"include_top": False, "weights": weights, "input_tensor": x, "input_shape": shape, "pooling": "avg"}
    if "include_preprocessing" in inspect.signature(constructor).parameters:
        options["include_preprocessing"] = True
    elif not scales_its_own_pixels(application):
        options["input_tensor"] = ApplicationPreprocessing(application, name="preprocess_input")(x)
    try:
        with graph.fresh_names():
            base = constructor(**options)
    except ValueError as error:  # the application's own rule on its input (size, channels)
        reason = " ".join(str(error).split())
        raise KerasTeamError("input_shape", list(shape), f"a shape {application} accepts ({reason})") from error
    except Exception as error:  # keras.utils.get_file raises a bare Exception when the download fails
        if not str(error).startswith(DOWNLOAD_FAILED):
            raise
        raise KerasTeamError("weights", weights, f"weights Keras can download ({' '.join(str(error).split())}); "
                             "offline: weights=None, or the file placed in ~/.keras/models") from error
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    outputs = layers.Dense(num_classes, name="logits", dtype="float32")(base.output)
    return keras.Model(inputs, outputs, name=name)


def fit_input(model: keras.Model, image_shape: Sequence[int], *, name: str = "fit_input") -> keras.Model:
    """`model` taking images of `image_shape`: a `FitImages` layer in front resizes and converts them.

    The model's own layers (and weights) are reused, each a layer of the
    result, so its cuts keep their names (`keras_team.graph.replay`). An
    image model whose colour channels cannot be converted, or a model that
    does not take images, is a `KerasTeamError` on `input_shape`.

    Example:
        >>> leader = fit_input(seed_cnn((8, 8, 1), 5), (12, 12, 3))
        >>> leader.input_shape, [layer.name for layer in leader.layers][1:3]
        ((None, 12, 12, 3), ['fit_input', 'rescale'])
    """
    images, spec = tuple(int(n) for n in image_shape), model.inputs[0]
    shape = tuple(spec.shape[1:])
    if len(model.inputs) != 1 or len(shape) != 3 or None in shape or len(images) != 3:
        raise KerasTeamError("input_shape", list(images), f"the model's own input {shape} (it does not take images "
                             "of a fixed size, which could be resized to it)")
    if images[-1] != shape[-1] and (images[-1], shape[-1]) not in FitImages.CONVERSIONS:
        raise KerasTeamError("input_shape", list(images), f"{shape[-1]} channels, as the model takes, or one of "
                             f"the conversions {sorted(FitImages.CONVERSIONS)} (from, to)")
    inputs = keras.Input(images, dtype=spec.dtype, name="pixels")
    outputs = graph.replay(model, FitImages(*shape, name=name)(inputs))
    return keras.Model(inputs, outputs, name=model.name)
