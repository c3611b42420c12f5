"""What an export says about itself: ``assets.extra/keras_team.json`` in a SavedModel version.

A small JSON record for whoever deploys the model, beside (not inside) the
graph: the package versions that wrote it, the members and their outputs,
the class names, the ensemble weights of ``serving_default`` and
``classify``, each leader's cut, and the input: its dtype and shape and the
scaling and resizing the model does itself (so a client sends raw values).

Example:
    >>> from keras_team.export.signatures import input_spec
    >>> model = keras_team.zoo.seed_cnn((8, 8, 1), 5, name="digits")
    >>> record = metadata(model, input_spec(model, "uint8"))
    >>> record["members"], record["input"]["dtype"], record["input"]["preprocessing"][0]["layer"]
    ({'digits': ['digits']}, 'uint8', 'Rescaling')
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import pathlib
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from keras_team.export.signatures import class_names_of, ensemble_shares, members
from keras_team.layers import ApplicationPreprocessing, FitImages
from keras_team.team import Team
from keras_team.transfers import Transferred

METADATA_FILE = pathlib.Path("assets.extra") / "keras_team.json"
PACKAGES = ("keras-team", "keras", "tensorflow")
# Layers that scale or reshape raw inputs, and the config entries that say how.
PREPROCESSING = {keras.layers.Rescaling: ("scale", "offset"), keras.layers.Normalization: ("mean", "variance"),
                 FitImages: ("height", "width", "channels", "interpolation"), ApplicationPreprocessing: ("application",)}


def package_versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Each installed package's version (None where it is not installed).

    Example:
        >>> package_versions(["keras", "no-such-package"])["no-such-package"] is None
        True
    """
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def metadata(model: keras.Model, spec: tf.TensorSpec, *, class_names: Sequence[str] | None = None,
             weights: Mapping[str, float] | None = None) -> dict:
    """The record of an export of `model` taking `spec` (see the module docstring).

    Example:
        >>> from keras_team.export.signatures import input_spec
        >>> model = keras_team.zoo.seed_cnn((8, 8, 1), 3, name="digits")
        >>> record = metadata(model, input_spec(model), class_names=["cat", "dog", "fox"])
        >>> record["class_names"], record["ensemble_weights"], record["cuts"]
        (['cat', 'dog', 'fox'], {'digits': 1.0}, {})
    """
    owned = members(model)
    shares = ensemble_shares([output for outputs in owned.values() for output in outputs], weights)
    leaders = model.leaders if isinstance(model, Team) else {model.name: model}
    return {
        "versions": package_versions(PACKAGES),
        "members": owned,
        "class_names": class_names_of(model, class_names),
        "ensemble_weights": {name: shares.get(name, 0.0) for outputs in owned.values() for name in outputs},
        "cuts": {name: dataclasses.asdict(leader.cut) for name, leader in leaders.items() if isinstance(leader, Transferred)},
        "input": {"name": spec.name, "dtype": spec.dtype.name, "shape": spec.shape.as_list(),
                  "preprocessing": preprocessing(model)},
    }


def preprocessing(model: keras.Model) -> list[dict]:
    """The layers inside `model` (nested models included; a Team's: its leaders') that scale or resize raw inputs.

    Example:
        >>> preprocessing(keras_team.zoo.seed_cnn((8, 8, 1), 5))
        [{'layer': 'Rescaling', 'name': 'rescale', 'scale': 0.00392156862745098, 'offset': 0.0}]
    """
    found, seen = [], set()

    def visit(layer: keras.layers.Layer) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        kind = next((kind for kind in PREPROCESSING if isinstance(layer, kind)), None)
        if kind is not None:
            config = layer.get_config()
            found.append({"layer": kind.__name__, "name": layer.name, **{key: config.get(key) for key in PREPROCESSING[kind]}})
        for child in getattr(layer, "layers", ()):
            visit(child)
        inner = getattr(layer, "layer", None)  # a wrapper (e.g. the body's InferenceMode)
        if isinstance(inner, keras.layers.Layer):
            visit(inner)

    for root in model.leaders.values() if isinstance(model, Team) else [model]:
        visit(root)
    return found
