"""The YAML config of a ``keras-team run``: pydantic models, validated before anything starts.

Every field is declared once below, with its type, constraints, default and a
``description``; from those come the validation, the one-line errors, the
commented YAML that ``keras-team init`` writes and the JSON schema for
editors. The checks are pydantic's alone (no model is built), so a config
mistake is reported before anything trains.

Adding a section is a few declarations: a :class:`Section` subclass whose
fields use ``Field(default, description=...)`` and the constraint types
below, then one field of :class:`Config` naming it.

Example:
    >>> from keras_team.app.config import load_config
    >>> config = load_config(overrides=["transfer.keep=fc1", "seed=7"])
    >>> config.transfer.keep, config.seed, config.data.target.shots
    ('fc1', 7, 5)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Optional, TypeVar, Union

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema

from keras_team.errors import KerasTeamError
from keras_team.export.formats import FORMATS

# ---------------------------------------------------------------------------
# Declaring fields: the types below carry their constraints, and
# ``_allowed`` turns any field's type into the "expected ..." text of errors.


@dataclasses.dataclass(frozen=True)
class Allowed:
    """Annotated metadata: the allowed-value text of a rule no constraint spells out.

    Example:
        >>> Allowed("a path to an existing file").text
        'a path to an existing file'
    """

    text: str
    plural: str = ""  # for list items: "names of ..."; the singular text when empty


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value  # YAML lists; strict elsewhere


def _distinct(items: tuple) -> tuple:
    if len(set(items)) != len(items):
        raise ValueError("items repeat")
    return items


def _existing_keras_file(path: str) -> str:
    if not (path.endswith(".keras") and os.path.isfile(path)):
        raise ValueError("not an existing .keras file")
    return path


_DISTINCT = AfterValidator(_distinct)
T = TypeVar("T")

ListOf = Annotated[tuple[T, ...], BeforeValidator(_as_tuple)]
"""A YAML list, held as a tuple: ``ListOf[Positive]``."""
DistinctListOf = Annotated[
    tuple[T, ...], BeforeValidator(_as_tuple), _DISTINCT, Field(json_schema_extra={"uniqueItems": True})
]
"""A YAML list whose items differ."""
Count = Annotated[int, Field(ge=0)]
"""An int >= 0 (0 may mean "skip")."""
Positive = Annotated[int, Field(ge=1)]
"""An int >= 1: epochs, units, shots."""
Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A finite number > 0: learning rates, temperatures."""
Penalty = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A finite number >= 0: an L2 strength."""
L2Grid = Annotated[DistinctListOf[Penalty], Field(min_length=1)]
"""The L2 strengths a linear probe tries: the one with the lowest validation log-loss is kept."""
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)  # keras_team.probe.L2_GRID, without importing Keras here
POOLS = ("flatten", "mean", "mean_std")  # keras_team.heads.POOLS, likewise
Dropout = Annotated[float, Field(ge=0, lt=1)]
"""A fraction in [0, 1)."""
Augmentations = DistinctListOf[Literal["flip", "crop", "shift"]]
"""Training-only augmentations, as `keras_team.data.AUGMENTATIONS` names them."""
Text = Annotated[str, Field(min_length=1, pattern=r"\S")]
"""A non-empty string."""
Identifier = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"),
    Allowed("a name of letters, digits and _ not starting with a digit", "names of letters, digits and _"),
]
"""A name usable as a Keras layer or output name."""
KerasFile = Annotated[str, AfterValidator(_existing_keras_file), Allowed("a path to an existing file ending in .keras")]
"""A path to an existing ``.keras`` file."""
ImageShape = Annotated[
    tuple[Positive, Positive, Positive], BeforeValidator(_as_tuple), Allowed("[height, width, channels]: three ints >= 1")
]
"""An image shape: ``[224, 224, 3]``."""


class Section(BaseModel):
    """Base of every config section: unknown keys, wrong types and changes are refused.

    Example:
        >>> class Tune(Section):
        ...     trials: Positive = Field(10, description="models to try")
        >>> Tune(trials=3).trials
        3
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_defaults(cls, data: Any) -> Any:
        """A sub-section given in part keeps its default's other values (not the class's)."""
        if not isinstance(data, Mapping):
            return data
        filled = dict(data)
        for name, field in cls.model_fields.items():
            if isinstance(data.get(name), Mapping) and field.default_factory is not None:
                default = field.get_default(call_default_factory=True)
                if isinstance(default, BaseModel):
                    filled[name] = _merge(default.model_dump(), data[name])
        return filled


def _bounds(metadata: Sequence[Any]) -> dict[str, Any]:
    """Flatten constraints (annotated_types and nested FieldInfo) into one dict."""
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            found.update(_bounds(item.metadata))
        elif isinstance(item, Allowed):
            found["allowed"], found["allowed_plural"] = item.text, item.plural or item.text
        elif item is _DISTINCT:
            found["distinct"] = True
        else:  # annotated_types' Ge, Gt, Le, Lt, MinLen: one attribute each
            found.update({key: getattr(item, key) for key in ("ge", "gt", "le", "lt", "min_length") if hasattr(item, key)})
    return found


def _number_text(bounds: dict[str, Any], plural: bool) -> str:
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if low and high:
        return f"{'numbers' if plural else 'a number'} in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    finite = "finite numbers" if plural else "a finite number"
    if low:
        return f"{finite} {'>=' if low[0] == '[' else '>'} {low[1]:g}"
    return f"{finite} {'<=' if high[0] == ']' else '<'} {high[1]:g}" if high else finite


def _int_text(bounds: dict[str, Any], plural: bool) -> str:
    noun = "ints" if plural else "an int"
    low = bounds.get("ge", bounds["gt"] + 1 if "gt" in bounds else None)
    high = bounds.get("le", bounds["lt"] - 1 if "lt" in bounds else None)
    if low is not None and high is not None:
        return f"{noun} in [{low}, {high}]"
    if low is not None:
        return f"{noun} >= {low}"
    return f"{noun} <= {high}" if high is not None else noun


def _allowed(annotation: Any, metadata: Sequence[Any] = (), *, plural: bool = False) -> str:
    """What a field of this type accepts, in words (the end of its error message).

    Example:
        >>> _allowed(Optional[ListOf[Positive]])
        'null or a list of ints >= 1'
    """
    while typing.get_origin(annotation) is Annotated:
        annotation, *more = typing.get_args(annotation)
        metadata = [*metadata, *more]
    bounds = _bounds(metadata)
    if "allowed" in bounds:
        return bounds["allowed_plural" if plural else "allowed"]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        text = " or ".join(_allowed(a, plural=plural) for a in args if a is not type(None))
        return f"null or {text}" if type(None) in args else text
    if origin is Literal:
        return f"{'items from' if plural else 'one of'} {', '.join(map(str, args))}"
    if origin is tuple:
        wanted = "non-empty list" if bounds.get("min_length") else "list"
        distinct = "distinct " if bounds.get("distinct") else ""
        return f"{'lists' if plural else 'a ' + wanted} of {distinct}{_allowed(args[0], plural=True)}"
    if annotation is bool:
        return "true/false values" if plural else "true or false"
    if annotation is int:
        return _int_text(bounds, plural)
    if annotation is float:
        return _number_text(bounds, plural)
    if annotation is str:
        return "non-empty strings" if plural else "a non-empty string"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"{'mappings' if plural else 'a mapping'} with keys {', '.join(annotation.model_fields)}"
    return getattr(annotation, "__name__", str(annotation))


def _unwrap(annotation: Any) -> Any:
    """The type without Annotated and Optional wrappers."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in args and len(args) == 2:
            annotation = next(a for a in args if a is not type(None))
            continue
        return annotation


def _section_of(annotation: Any) -> type[BaseModel] | None:
    inner = _unwrap(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _item_of(annotation: Any) -> Any:
    inner = _unwrap(annotation)
    return typing.get_args(inner)[0] if typing.get_origin(inner) is tuple else None


# ---------------------------------------------------------------------------
# The schema.


class TaskConfig(Section):
    """One task's data: a dataset name, a class subset and k-shot sampling."""

    name: Text = Field("digits", description="dataset: digits (bundled, offline), a TFDS name such as cifar10, "
                       "a .npz file (arrays x, y; optional x_test, y_test, class_names) or a folder of class "
                       "subfolders of images (train/ and test/ subfolders are the splits when present; validation/ too)")
    classes: Optional[Annotated[DistinctListOf[Union[Count, Text]], Field(min_length=1)]] = Field(
        None, description="labels or class names to keep, in this order (null: all)"
    )
    shots: Optional[Positive] = Field(None, description="labelled examples per class (null: all)")


class DataConfig(Section):
    """Source and target tasks and how they are batched."""

    source: TaskConfig = Field(
        default_factory=lambda: TaskConfig(classes=(0, 1, 2, 3, 4)), description="the task the leader is trained on"
    )
    target: TaskConfig = Field(
        default_factory=lambda: TaskConfig(classes=(5, 6, 7, 8, 9), shots=5),
        description="the task the team is trained on (few labelled examples: shots)",
    )
    validation: float = Field(
        0.2, gt=0, lt=1, description="fraction of the training examples held out for validation"
    )
    batch_size: Positive = Field(32, description="examples per batch")
    augment: Augmentations = Field((), description="training-only augmentation")
    data_dir: Optional[Text] = Field(None, description="TFDS data directory (null: the TFDS default)")
    download: bool = Field(False, description="true: let TFDS download missing datasets")
    stream: Union[Literal["auto"], bool] = Field(
        "auto", description="decode the images of a folder or TFDS dataset batch by batch as training reads them, "
        "never all in memory: true, false, or auto (stream when the decoded images exceed a tenth of the "
        "machine's memory)"
    )


class LeaderConfig(Section):
    """The leader: loaded from ``path``, a ``keras.applications`` network, or trained from ``architecture``."""

    path: Optional[KerasFile] = Field(None, description="an existing trained leader to load (null: build one)")
    architecture: Literal["seed_cnn", "residual_cnn"] = Field(
        "residual_cnn", description="the leader to train when path and application are null"
    )
    application: Optional[Text] = Field(
        None, description="a keras.applications network as the leader, e.g. MobileNetV3Small, EfficientNetV2B0, "
        "ResNet50V2, ConvNeXtTiny: without its top, average-pooled, with a new classifier for the source classes, "
        "its own pixel scaling inside (null: architecture)"
    )
    weights: Optional[Literal["imagenet"]] = Field(
        "imagenet", description="the application's weights: imagenet (pretrained, downloaded once: the leader is "
        "not trained on the source) or null (random: trained on the source as architecture is)"
    )
    input_shape: Optional[ImageShape] = Field(
        None, description="the application's input; images are resized and grey <-> RGB converted to it inside "
        "the model (null: the data's shape with sides under 32 enlarged to 32, and 3 channels)"
    )
    epochs: Positive = Field(20, description="training epochs on the source task")
    learning_rate: Rate = Field(0.001, description="learning rate on the source task")
    augment: DistinctListOf[Literal["flip", "crop"]] = Field(
        (), description="training-only augmentation of the source task (not measured to help digits: off)"
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="label smoothing of the source task's loss (not measured to help digits: 0)"
    )

    @model_validator(mode="after")
    def _one_kind_of_leader(self) -> LeaderConfig:
        if self.path and self.application:
            raise KerasTeamError("application", self.application,
                                 "null when path is given (a loaded leader has its own architecture)")
        if self.input_shape and not self.application:
            raise KerasTeamError("input_shape", list(self.input_shape),
                                 "null unless application is set (architecture takes the data's shape)")
        return self


class HeadConfig(Section):
    """The new task head put on the kept part of the leader."""

    kind: Literal["dense", "conv", "cosine", "linear_probe"] = Field(
        "linear_probe", description="layer type of the head; cosine: a cosine classifier with a learned scale after the "
        "hidden layers, imprinted with the class means of the training split's features before training; "
        "linear_probe: one linear layer on the features standardized by the training split's statistics (at one "
        "shot, of the training and validation inputs: keras_team.probe.statistics_for), then L2-normalised "
        "(keras_team.heads.probe; hidden, dropout and activation do not apply), fitted once per strength of l2, "
        "each stopped early on the validation log-loss, the strength best there kept (keras_team.probe; "
        "the default: it beat the dense head on validation, digits and photo patches, benchmarks/README.md)"
    )
    hidden: ListOf[Positive] = Field((64,), description="units of each hidden layer ([]: a linear head)")
    dropout: Dropout = Field(0.2, description="dropout rate of the head")
    activation: Text = Field("relu", description="Keras activation name of the hidden layers")
    l2: L2Grid = Field(L2_GRID, description="linear_probe: the L2 strengths tried, chosen on validation")


class TransferConfig(Section):
    """Where to cut the leader, the head, and the optional fine-tuning."""

    keep: Union[Positive, Text, None] = Field(
        None, description="where to cut the leader: the first N weighted layers, or a cut's layer or block name "
        "(keras-team cuts); auto: the block output keras_team.rank_cuts scores best on the target's training and "
        "validation examples, once the leader is trained; null: the middle block output (pool1 for residual_cnn), "
        "a fixed default not chosen on data"
    )
    head: HeadConfig = Field(default_factory=HeadConfig, description="the new task head put on the kept layers")
    epochs: Positive = Field(100, description="epochs training the head on the frozen kept layers")
    learning_rate: Rate = Field(
        0.03, description="learning rate of head training (0.03 suits the linear_probe head; about 0.003 a dense, "
        "conv or cosine head)"
    )
    unfreeze: Count = Field(
        0, description="top k weighted layers of the kept part fine-tuned afterwards (at most keep when keep is an int)"
    )
    fine_tune_epochs: Count = Field(10, description="epochs of that fine-tuning")
    fine_tune_learning_rate: Rate = Field(0.0001, description="learning rate of that fine-tuning")
    cache: bool = Field(
        True, description="train on the frozen part's output computed once (keras_team.caching.fit_transfer): the "
        "same weights as running it every step, faster; false runs the whole model every step"
    )
    views: Positive = Field(
        10, description="with data.augment: augmented passes of the frozen part cached (epoch e reads pass e mod views)"
    )

    @model_validator(mode="after")
    def _unfreeze_within_keep(self) -> TransferConfig:
        if isinstance(self.keep, int) and self.unfreeze > self.keep:
            raise KerasTeamError("unfreeze", self.unfreeze, f"an int in [0, {self.keep}] (no more than keep)")
        return self


class DistillConfig(Section):
    """Distillation: KL to the leader's probabilities at ``temperature`` (named as keras.distillation.Distiller)."""

    temperature: Rate = Field(description="softmax temperature of both distributions")
    student_loss_weight: float = Field(
        ge=0, le=1, description="weight of the label loss (1 - student_loss_weight: the KL term)"
    )


class FollowerConfig(Section):
    """A follower model reading a tap of the leader."""

    name: Identifier = Field("mlp", description="unique name of the follower")
    kind: Literal["mlp", "linear_probe"] = Field(
        "mlp", description="mlp: hidden layers then the logits; linear_probe: one linear layer on the taps "
        "standardized by the training split's statistics (at one shot, of the training and validation inputs: "
        "keras_team.probe.statistics_for), then L2-normalised (keras_team.heads.probe; hidden and dropout do not "
        "apply), fitted once per strength of l2 on the cached taps, each stopped early on the "
        "validation log-loss, the strength best there kept (keras_team.probe; a learning_rate of 0.03 suits it)"
    )
    l2: L2Grid = Field(L2_GRID, description="linear_probe: the L2 strengths tried, chosen on validation")
    pool: Literal[tuple(POOLS)] = Field(
        "flatten", description="linear_probe: how a spatial tap becomes its vector: flatten (every value, where it "
        "lies), mean or mean_std (each channel's mean, and standard deviation, over positions: "
        "keras_team.heads.SpatialPool)"
    )
    augment: Augmentations = Field(
        (), description="linear_probe: training-only augmentation of the target's training split; the taps of views "
        "augmented copies join the examples' own, computed once (shift: by up to 1/8 of each side, mirrored borders)"
    )
    views: Positive = Field(7, description="linear_probe with augment: the augmented copies of the training split "
                            "(each one more pass of the leaders over it, its taps held in memory; none for a streamed target)")
    tap: Union[Text, Annotated[DistinctListOf[Text], Field(min_length=1)]] = Field(
        "features", description="what it reads: features (the cut), logits, probs, a layer name, or a cut inside "
        "the kept body (e.g. pool1); a list of them (multi-scale) reads each, spatial ones average-pooled, joined"
    )
    temperature: Rate = Field(1.0, description="softmax temperature of the leader's probabilities when tap is probs")
    hidden: ListOf[Positive] = Field((50,), description="units of each hidden layer")
    dropout: Dropout = Field(0.0, description="dropout rate")
    distill: Optional[DistillConfig] = Field(
        None, description="adds a KL loss to the leader's softened probabilities (null: none)"
    )
    epochs: Positive = Field(100, description="training epochs")
    learning_rate: Rate = Field(0.003, description="learning rate")
    leaders: Optional[Annotated[DistinctListOf[Identifier], Field(min_length=1)]] = Field(
        None, description="names of the leaders it reads (null: every leader)"
    )
    combine: Literal["concat", "each"] = Field(
        "concat",
        description="with several leaders: concat joins their taps into one input; each applies the follower "
        "to every leader's tap and sums its losses",
    )

    @model_validator(mode="after")
    def _probe_has_one_output(self) -> FollowerConfig:
        if self.kind == "linear_probe" and self.combine == "each":
            raise KerasTeamError("combine", self.combine, "concat for a linear_probe (one linear layer, one output)")
        if self.kind != "linear_probe" and self.pool != "flatten":
            raise KerasTeamError("pool", self.pool, "flatten for an mlp (a linear_probe's option)")
        if self.kind != "linear_probe" and self.augment:
            raise KerasTeamError("augment", list(self.augment), "[] for an mlp (a linear_probe's option)")
        if self.kind == "linear_probe" and self.distill is not None:
            raise KerasTeamError("distill", self.distill.model_dump(), "null for a linear_probe (it fits the labels alone)")
        return self


class TeamLeaderConfig(LeaderConfig):
    """One of several leaders: its name, its source training and its own transfer."""

    name: Identifier = Field(description="unique member name of this leader")
    transfer: TransferConfig = Field(default_factory=TransferConfig, description="its cut, head and fine-tuning")


class TrainConfig(Section):
    """Epochs and learning rate of one training stage."""

    epochs: Positive = Field(100, description="training epochs (the transfer head's budget, for a fair comparison)")
    learning_rate: Rate = Field(0.003, description="learning rate")


class TeamConfig(Section):
    """Joint fine-tuning of the assembled team (``epochs: 0`` skips it)."""

    epochs: Count = Field(0, description="epochs of joint fine-tuning (0: skip it)")
    learning_rate: Rate = Field(0.0001, description="learning rate")


class ExportConfig(Section):
    """The optional ``export`` stage: the trained team as deployment artefacts, each verified against Keras."""

    formats: DistinctListOf[Literal[tuple(FORMATS)]] = Field(
        (),
        description="artefacts written to <output_dir>/export, each verified against Keras on the validation split: "
        "saved_model is TF Serving's layout, tflite is float32, tflite-int8 has int8 I/O ([]: no export stage)",
    )
    name: Identifier = Field("team", description="the model's name for TF Serving and in the LiteRT file names")


class DistributeConfig(Section):
    """Devices and numerics of every stage (see keras_team.distribute)."""

    strategy: Literal["auto", "default", "mirrored", "multi_worker"] = Field(
        "auto", description="tf.distribute strategy: auto (multi_worker when TF_CONFIG or --workers names a cluster, "
        "else mirrored when several GPUs are visible), default (one device), mirrored (all GPUs; data.batch_size is "
        "then the global batch) or multi_worker (every machine of the cluster in TF_CONFIG)"
    )
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32", description="Keras dtype policy of the models (logits stay float32)"
    )
    jit_compile: bool = Field(False, description="true: XLA-compile training steps (slower on CPU, measured)")
    steps_per_execution: Union[Literal["auto"], Positive] = Field(
        "auto", description="training batches run per call into TensorFlow; auto: 10 when an epoch has 50 "
        "batches or more, else 1 (keras_team.distribute.steps_per_execution, measured)")

    def check_cluster(self) -> None:
        """Refuse a strategy other than auto or multi_worker for a run that joins a cluster.

        Example:
            >>> DistributeConfig(strategy="default").check_cluster()
            Traceback (most recent call last):
            ...
            keras_team.errors.KerasTeamError: distribute.strategy='default' is not valid: expected auto or multi_worker when TF_CONFIG or --workers names a cluster
        """
        if self.strategy not in ("auto", "multi_worker"):
            raise KerasTeamError("distribute.strategy", self.strategy,
                                 "auto or multi_worker when TF_CONFIG or --workers names a cluster")


class SearchSpaceConfig(Section):
    """What ``keras-team tune`` may choose; each list is the values of one KerasTuner ``hp.Choice``."""

    cuts: Optional[Annotated[DistinctListOf[Text], Field(min_length=1)]] = Field(
        None, description="cut-point layer names to search (null: every cut keeping a weighted layer, not the output)"
    )
    top_k_cuts: Optional[Positive] = Field(
        None, description="search only the k of those cuts the cut advisor (keras_team.rank_cuts) scores best on "
        "the search's training and validation examples (null: all)"
    )
    head_layers: Annotated[DistinctListOf[Count], Field(min_length=1)] = Field(
        (0, 1), description="hidden Dense layers of the head (0: a linear head)"
    )
    head_units: Annotated[DistinctListOf[Positive], Field(min_length=1)] = Field(
        (32, 64), description="units of each hidden layer"
    )
    dropout: Annotated[DistinctListOf[Dropout], Field(min_length=1)] = Field(
        (0.0, 0.25), description="dropout rates of the head"
    )
    learning_rate: Annotated[DistinctListOf[Rate], Field(min_length=1)] = Field(
        (0.001, 0.003, 0.01), description="learning rates of the head phase"
    )
    max_unfreeze: Count = Field(
        2, description="most kept weighted layers fine-tuned after the head phase; per cut at most what it keeps"
    )
    fine_tune_learning_rate: Annotated[DistinctListOf[Rate], Field(min_length=1)] = Field(
        (0.0001, 0.00001), description="learning rates of the fine-tuning phase"
    )
    fine_tune_fraction: float = Field(
        0.5, gt=0, lt=1, description="share of a trial's epochs spent fine-tuning when it unfreezes layers"
    )


class TuneConfig(Section):
    """``keras-team tune``: a KerasTuner search over the cut, the head and the fine-tuning, on validation data."""

    output_dir: Text = Field("runs/digits-tune", description="where the search writes its trials, table, plot and best config")
    overwrite: bool = Field(False, description="true: replace a finished search in output_dir")
    tuner: Literal["random", "bayesian", "hyperband", "grid"] = Field("random", description="KerasTuner tuner")
    max_trials: Positive = Field(10, description="most trials (hyperband: a cap on its brackets)")
    epochs: Positive = Field(40, description="epochs per trial, both phases together (hyperband: the most per trial)")
    objective: Literal["val_accuracy", "val_loss"] = Field("val_accuracy", description="what the search optimises")
    validation_per_class: Optional[Positive] = Field(
        None, description="cap on validation examples per class used by the search (null: all)"
    )
    oracle_ip: Text = Field(
        "127.0.0.1", description="address the chief's oracle binds in a distributed search (loopback: this machine only)"
    )
    oracle_port: Optional[Annotated[int, Field(ge=1, le=65535)]] = Field(None, description="its port (null: a free one)")
    space: SearchSpaceConfig = Field(default_factory=SearchSpaceConfig, description="the search space")


class Config(Section):
    """A whole run's config. Build it with :func:`load_config`.

    Example:
        >>> config = load_config()
        >>> config.leader.architecture, config.followers[0].tap
        ('residual_cnn', 'features')
        >>> load_config(overrides=["seed=3"]).to_dict()["seed"]
        3
    """

    seed: Count = Field(0, description="random seed for weights, shuffling and sampling")
    output_dir: Text = Field("runs/digits", description="where the run writes models, reports and the resolved config")
    overwrite: bool = Field(False, description="true: allow reusing the directory of a finished run")
    deterministic: bool = Field(False, description="true: TF op determinism (same numbers every run, slower)")
    data: DataConfig = Field(default_factory=DataConfig, description="the two tasks and how their examples are fed")
    leader: LeaderConfig = Field(default_factory=LeaderConfig, description="the model trained on the source task")
    transfer: TransferConfig = Field(
        default_factory=TransferConfig,
        description="cut the leader, freeze the kept part, train a new head on the target task",
    )
    leaders: ListOf[TeamLeaderConfig] = Field(
        (),
        description="several leaders: a list of mappings of name, the fields of leader, and transfer; an entry "
        "takes what it omits from leader and transfer above ([]: one leader, named leader, as those describe)",
    )
    followers: ListOf[FollowerConfig] = Field(
        default_factory=lambda: (FollowerConfig(),
                                 FollowerConfig(name="probe", kind="linear_probe", learning_rate=0.03, augment=("shift",)),
                                 FollowerConfig(name="pooled", kind="linear_probe", learning_rate=0.03, pool="mean_std")),
        description="models fed by the leader's outputs: a list ([] for none) of mappings like the ones below; "
        "a follower you list takes the fields it omits from the first (the mlp)",
    )
    baseline: TrainConfig = Field(
        default_factory=TrainConfig,
        description="the (first) leader's architecture, cut and head trained from scratch on the target alone",
    )
    team: TeamConfig = Field(default_factory=TeamConfig, description="joint fine-tuning of the assembled team")
    export: ExportConfig = Field(default_factory=ExportConfig, description="export the team for TF Serving and LiteRT")
    distribute: DistributeConfig = Field(
        default_factory=DistributeConfig, description="devices and numerics: strategy, mixed precision, XLA"
    )
    tune: TuneConfig = Field(default_factory=TuneConfig, description="keras-team tune: the search of the cut, head and fine-tuning")

    @model_validator(mode="before")
    @classmethod
    def _leaders_take_the_shorthand(cls, data: Any) -> Any:
        """Each entry of `leaders` takes what it omits from `leader` and `transfer`."""
        if not (isinstance(data, Mapping) and isinstance(data.get("leaders"), (list, tuple))):
            return data
        base = LeaderConfig().model_dump()
        base["transfer"] = TransferConfig().model_dump()
        for key, target in (("leader", base), ("transfer", base["transfer"])):
            if isinstance(data.get(key), Mapping):
                target.update(_merge(target, data[key]))
        for i, entry in enumerate(data["leaders"]):
            if isinstance(entry, Mapping) and "name" not in entry:
                raise KerasTeamError(f"leaders[{i}]", dict(entry), "a mapping that also gives name")
        entries = [_merge(base, entry) if isinstance(entry, Mapping) else entry for entry in data["leaders"]]
        return {**data, "leaders": entries}

    @model_validator(mode="after")
    def _member_names_fit(self) -> Config:
        leaders = [leader.name for leader in self.team_leaders]
        for i, name in enumerate(leaders):
            if name in leaders[:i]:
                raise KerasTeamError(f"leaders[{i}].name", name, f"a name not used by another leader (used: {', '.join(leaders[:i])})")
        seen = list(leaders)
        for i, follower in enumerate(self.followers):
            if follower.name in seen:
                used = ", ".join(seen)
                raise KerasTeamError(f"followers[{i}].name", follower.name, f"a name not used by another follower or leader (used: {used})")
            seen.append(follower.name)
            for j, name in enumerate(follower.leaders or ()):
                if name not in leaders:
                    raise KerasTeamError(f"followers[{i}].leaders[{j}]", name, f"the name of a leader: {', '.join(leaders)}")
        return self

    @property
    def team_leaders(self) -> tuple[TeamLeaderConfig, ...]:
        """The team's leaders: `leaders`, or the one `leader` and `transfer` describe, named "leader".

        Example:
            >>> [(c.name, c.architecture, c.transfer.epochs) for c in load_config().team_leaders]
            [('leader', 'residual_cnn', 100)]
        """
        if self.leaders:
            return self.leaders
        return (TeamLeaderConfig(name="leader", transfer=self.transfer, **dict(self.leader)),)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Validate a config mapping; fields it omits take their defaults.

        Example:
            >>> config = load_config()
            >>> Config.from_dict(config.to_dict()) == config
            True
        """
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise _user_error(error, cls) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, ready for YAML or JSON.

        Example:
            >>> load_config().to_dict()["data"]["target"]["classes"]
            [5, 6, 7, 8, 9]
        """
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The resolved config as YAML; ``load_config`` reads it back equal.

        Example:
            >>> print(load_config().to_yaml().splitlines()[0])
            seed: 0
        """
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False)


def stage_suffix(leader: str) -> str:
    """What a leader's stages and files end with: nothing for the one-leader run's `leader`.

    Example:
        >>> stage_suffix("leader"), stage_suffix("cnn")
        ('', '_cnn')
    """
    return "" if leader == "leader" else f"_{leader}"


# ---------------------------------------------------------------------------
# pydantic's ValidationError -> one KerasTeamError naming the full field path.


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _keys_allowed(names: Sequence[str], given: object = None) -> str:
    allowed = f"one of the keys {', '.join(names)}"
    close = difflib.get_close_matches(str(given), names, n=1) if given is not None else []
    return f"{allowed} (did you mean {close[0]!r}?)" if close else allowed


def _user_error(error: ValidationError, model: type[BaseModel]) -> KerasTeamError:
    """The first of pydantic's errors, as the one-line error a user reads."""
    first = error.errors()[0]
    loc, kind = first["loc"], first["type"]
    if kind == "missing":  # reported at the mapping that lacks the key
        loc = loc[:-1]
    path, annotation, metadata = "", model, []
    for part in loc:
        section = _section_of(annotation)
        if section is not None and isinstance(part, str):
            if part not in section.model_fields:
                return KerasTeamError(_join(path, part), first["input"], _keys_allowed(list(section.model_fields), part))
            field = section.model_fields[part]
            annotation, metadata = field.annotation, field.metadata
        elif isinstance(part, int) and _item_of(annotation) is not None:
            annotation, metadata = _item_of(annotation), []
        else:  # a union member's tag: report the field as a whole
            break
        path = _join(path, part)
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, KerasTeamError):  # a rule across fields, relative to its section
        return KerasTeamError(_join(path, cause.field) if path else cause.field, cause.value, cause.allowed)
    if kind == "missing":
        missing = first["loc"][-1]
        return KerasTeamError(path or "config", first["input"], f"a mapping that also gives {missing}")
    return KerasTeamError(path or "config", first["input"], _allowed(annotation, metadata))


# ---------------------------------------------------------------------------
# YAML reading and writing: floats like 1e-4 are numbers, a key given twice
# is an error, lists of scalars are written inline.


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float and rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str, field: str, value: object) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None) or str(e)
        where = f"line {mark.line + 1}: {problem}" if mark is not None else problem
        context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and start is not None and mark is not None and start.line != mark.line:
            where += f"; {context} on line {start.line + 1}"
        raise KerasTeamError(field, value, f"valid YAML ({where})") from None


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing mappings as blocks and lists of scalars inline."""

    def represent_list(self, data):
        inline = all(not isinstance(v, (dict, list)) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


_Dumper.add_representer(list, _Dumper.represent_list)


def _scalar(value: Any) -> str:
    """One value as inline YAML: ``null``, ``[0, 1]``, ``0.001``."""
    return yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()


# ---------------------------------------------------------------------------
# The commented default config and the JSON schema, both from the models.

COMMENT_COLUMN = 25
HEADER = """\
# keras-team run config. Every field is optional in your own file: what you
# leave out keeps the value shown here. Override one field on the command
# line with --set, e.g. --set transfer.keep=fc1 --set followers.0.epochs=5
# Each comment says what the field does, then what it accepts. A JSON schema
# for editors: `keras-team schema` (also keras_team/app/config.schema.json).
"""


def _commented(key: str, value: str, comment: str, indent: str) -> str:
    line = f"{indent}{key}:{' ' + value if value else ''}"
    return f"{line.ljust(COMMENT_COLUMN - 1)} # {comment}"


def _section_lines(section: BaseModel, indent: str, first_prefix: str = "") -> list[str]:
    lines = []
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        about = f"{field.description}; {_allowed(field.annotation, field.metadata)}"
        prefix = first_prefix if not lines else " " * len(first_prefix)
        nested = _section_of(field.annotation)
        if nested is not None and value is not None:
            if not indent and not first_prefix:
                lines.append("")
            lines.append(_commented(name, "", field.description, indent + prefix))
            lines.extend(_section_lines(value, indent + prefix + "  "))
        elif _section_of(_item_of(field.annotation)) is not None:
            lines.extend(["", _commented(name, "" if value else "[]", field.description, indent + prefix)])
            for item in value:
                lines.extend(_section_lines(item, indent + prefix + "  ", "- "))
        else:
            lines.append(_commented(name, _scalar(to_plain(value)), about, indent + prefix))
    return lines


def to_plain(value: Any) -> Any:
    """Tuples as lists, sections as dicts: what YAML and JSON write.

    Example:
        >>> to_plain((1, (2, 3)))
        [1, [2, 3]]
    """
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    return value


def default_config_text() -> str:
    """The default config as YAML, every field commented with what it does and accepts.

    Written from the models' defaults and descriptions, so it cannot drift.

    Example:
        >>> print(default_config_text().splitlines()[6])
        seed: 0                  # random seed for weights, shuffling and sampling; an int >= 0
    """
    return HEADER + "\n" + "\n".join(_section_lines(Config(), "")) + "\n"


class _FactoryDefaults(GenerateJsonSchema):
    """Shows the defaults of sections too (pydantic leaves out those made by a factory)."""

    def get_default_value(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return to_plain(factory())
        return super().get_default_value(schema)


def json_schema() -> dict[str, Any]:
    """The JSON schema of a config file, every default shown.

    Example:
        >>> json_schema()["$defs"]["DataConfig"]["properties"]["target"]["default"]["shots"]
        5
    """
    return Config.model_json_schema(schema_generator=_FactoryDefaults)


def json_schema_text() -> str:
    """The JSON schema of a config file as text (for editors: YAML language servers read it).

    Example:
        >>> json.loads(json_schema_text())["properties"]["seed"]["default"]
        0
    """
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------
# Loading: file <- overrides, then validation (omitted fields take defaults).


def _read_file(path: str | os.PathLike) -> Any:
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise KerasTeamError("config", name, f"a readable YAML file ({reason})") from None
    data = _parse_yaml(text, "config", name)
    if data is None:  # an empty file changes nothing
        return {}
    if not isinstance(data, dict):
        raise KerasTeamError("config", name, f"a YAML mapping of keys {', '.join(Config.model_fields)} at the top level")
    return data


def _merge(base: Any, update: Any) -> Any:
    """Mappings merge key by key; anything else (lists too) replaces."""
    if isinstance(base, dict) and isinstance(update, Mapping):
        merged = dict(base)
        for key, value in update.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return update


def _apply_override(raw: dict, override: str) -> dict:
    """Apply one ``a.b.0.c=value`` override to the raw mapping, walking the schema."""
    if not isinstance(override, str) or "=" not in override:
        raise KerasTeamError("--set", override, "PATH=VALUE, e.g. transfer.keep=3")
    dotted, text = (s.strip() for s in override.split("=", 1))
    parts = re.sub(r"\[(\d+)\]", r".\1", dotted).split(".")  # followers[0].x == followers.0.x
    if not all(parts):
        raise KerasTeamError("--set", override, "PATH=VALUE with a dotted PATH, e.g. transfer.head.dropout=0.5")
    value = _parse_yaml(text, dotted, text)

    def put(node: Any, default: Any, annotation: Any, index: int, path: str) -> Any:
        if node is None and isinstance(default, tuple):  # a list not given yet: its default items
            node = to_plain(default)
        if index == len(parts):
            return _merge(node, value)
        part, section, item = parts[index], _section_of(annotation), _item_of(annotation)
        if item is not None and isinstance(node, list):
            if not (part.isdigit() and int(part) < len(node)):
                allowed = f"an index 0..{len(node) - 1}" if node else "no index: the list is empty"
                raise KerasTeamError(f"{path}[{part}]", text, allowed)
            i = int(part)
            changed = put(node[i], None, item, index + 1, _join(path, i))
            return [*node[:i], changed, *node[i + 1 :]]
        if section is None:
            raise KerasTeamError(_join(path, part), text, f"a known field ({path} has no subfields)")
        if part not in section.model_fields:
            raise KerasTeamError(_join(path, part), text, _keys_allowed(list(section.model_fields), part))
        node = {} if not isinstance(node, dict) else node
        field = section.model_fields[part]
        default = field.get_default(call_default_factory=True) if _item_of(field.annotation) is not None else None
        return {**node, part: put(node.get(part), default, field.annotation, index + 1, _join(path, part))}

    return put(raw, None, Config, 0, "")


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML file (fields it omits keep their defaults), apply overrides, validate.

    Each override is ``"dotted.path=value"``, the value read as YAML; a number
    in the path indexes a list. Any mistake raises
    :class:`~keras_team.errors.KerasTeamError` naming the full field path.

    Example:
        >>> config = load_config(overrides=["data.target.classes=[5, 6]",
        ...                                 "followers.0.epochs=5"])
        >>> config.data.target.classes, config.followers[0].epochs
        ((5, 6), 5)
    """
    raw = {} if path is None else _read_file(path)
    if isinstance(overrides, str):  # a lone string is one override, not its characters
        overrides = [overrides]
    for override in overrides:
        raw = _apply_override(raw, override)
    return Config.from_dict(raw)


__all__ = [
    "Allowed",
    "Config",
    "Count",
    "DataConfig",
    "DistillConfig",
    "DistinctListOf",
    "Dropout",
    "FollowerConfig",
    "HeadConfig",
    "Identifier",
    "ImageShape",
    "KerasFile",
    "L2Grid",
    "LeaderConfig",
    "ListOf",
    "Penalty",
    "Positive",
    "Rate",
    "SearchSpaceConfig",
    "Section",
    "TaskConfig",
    "TeamConfig",
    "TeamLeaderConfig",
    "TuneConfig",
    "Text",
    "TrainConfig",
    "TransferConfig",
    "default_config_text",
    "json_schema",
    "json_schema_text",
    "load_config",
    "stage_suffix",
    "to_plain",
]
