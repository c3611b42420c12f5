"""Followers: members that read taps of one or more leaders.

A follower's input width always comes from the tap it reads. Its sub-graph
(combine, temperature softmax, distillation) is a small Keras model of its
own, so the same weights train inside a `Team` or alone on cached taps.

Example:
    >>> follower = Follower(keras_team.zoo.mlp(5), tap="probs", temperature=2.0)
    >>> follower.name
    'mlp'
"""

from __future__ import annotations

import dataclasses
import re

import keras

from keras_team.errors import KerasTeamError
from keras_team.layers import Distillation, TemperatureSoftmax
from keras_team.taps import TAPS, tap_key

COMBINES = ("concat", "each")
JOIN = "join_taps"  # the layer concatenating a multi-tap follower's taps
POOLS = {3: keras.layers.GlobalAveragePooling1D, 4: keras.layers.GlobalAveragePooling2D,
         5: keras.layers.GlobalAveragePooling3D}  # by the rank of a tap with spatial axes
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Distill:
    """Distillation to the leaders' softened probabilities, named as `keras.distillation.Distiller`.

    The follower's label loss gets weight ``student_loss_weight`` (by
    default) and ``(1 - student_loss_weight) * T**2 * KL(p_leader(T) ||
    p_follower(T))`` is added to the team loss, as Keras' `Distiller` with
    `LogitsDistillation(temperature)` weighs them.

    Example:
        >>> Distill(temperature=4.0, student_loss_weight=0.75).kl_weight
        0.25
    """

    temperature: float = 4.0
    student_loss_weight: float = 0.5

    def __post_init__(self):
        if not self.temperature > 0:
            raise KerasTeamError("distill.temperature", self.temperature, "a float > 0")
        if not 0.0 <= self.student_loss_weight <= 1.0:
            raise KerasTeamError("distill.student_loss_weight", self.student_loss_weight, "a float in [0, 1]")

    @property
    def kl_weight(self) -> float:
        """The weight of the distillation term: ``1 - student_loss_weight``."""
        return 1.0 - self.student_loss_weight


def check_name(field: str, name: str) -> str:
    """Member names become output names: identifier-like strings only."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise KerasTeamError(field, name, "an identifier-like name ([A-Za-z_][A-Za-z0-9_]*)")
    return name


class Follower:
    """A team member fed by a tap of one or more leaders.

    Args:
        model: a layer or unbuilt model (e.g. `keras_team.zoo.mlp(10)`); it is
            built on the tap, so its input width is never typed by hand.
        name: member name (the output name in the team); defaults to the
            model's name.
        leaders: names of the leaders it reads; None reads every leader.
        tap: "features", "logits", "probs", a layer name of the leaders or
            a cut of a transferred leader's body (`keras_team.taps`); or a
            list of them (multi-scale): each tap with spatial axes is
            global-average-pooled and the taps are concatenated into one
            vector per leader.
        temperature: softmax temperature of the "probs" tap.
        combine: "concat" joins the leaders' taps into one input; "each"
            applies the follower to each leader's tap, one output (and one
            loss, summed in the team loss) per leader.
        distill: a `Distill` (or its dict) to also match the leaders'
            softened probabilities.

    Example:
        >>> Follower(keras_team.zoo.mlp(5), leaders=["a", "b"], combine="each").combine
        'each'
        >>> Follower(keras_team.zoo.mlp(5), name="scales", tap=["pool1", "pool2"]).taps
        ('pool1', 'pool2')
    """

    def __init__(
        self,
        model: keras.layers.Layer,
        *,
        name: str | None = None,
        leaders: list[str] | tuple[str, ...] | None = None,
        tap: str | list[str] | tuple[str, ...] = "features",
        temperature: float = 1.0,
        combine: str = "concat",
        distill: Distill | dict | None = None,
    ):
        if not isinstance(model, keras.layers.Layer):
            raise KerasTeamError("follower.model", model, "a keras Layer or model, e.g. keras_team.zoo.mlp(10)")
        self.model = model
        self.name = check_name("follower.name", name or model.name)
        self.leaders = None if leaders is None else tuple(leaders)
        taps = (tap,) if isinstance(tap, str) else tuple(tap) if isinstance(tap, (list, tuple)) else ()
        if not taps or not all(isinstance(t, str) and t for t in taps) or len(set(taps)) != len(taps):
            raise KerasTeamError(f"followers[{self.name}].tap", tap, f"one of {', '.join(TAPS)}, a layer name "
                                 "or a cut of the leader's body, or a list of distinct ones")
        self.tap = tap if isinstance(tap, str) else list(taps)
        self.taps = taps
        if not temperature > 0:
            raise KerasTeamError(f"followers[{self.name}].temperature", temperature, "a float > 0")
        self.temperature = float(temperature)
        if combine not in COMBINES:
            raise KerasTeamError(f"followers[{self.name}].combine", combine, f"one of {', '.join(COMBINES)}")
        self.combine = combine
        self.distill = Distill(**distill) if isinstance(distill, dict) else distill

    def output_names(self, leaders: list[str]) -> list[str]:
        """The team outputs of this follower: one, or one per leader for "each"."""
        if self.combine == "each":
            return [f"{self.name}_{leader}" for leader in leaders]
        return [self.name]

    def build_graph(self, tap_specs: dict[str, dict[str, keras.KerasTensor]], num_classes: dict[str, int]):
        """The follower's sub-model, from the leaders' tap tensors.

        Args:
            tap_specs: leader name -> {tap key: tensor} (shapes and dtypes read).
            num_classes: leader name -> width of its logits (for distillation).

        Returns:
            A `keras.Model` whose inputs are a dict keyed "<leader>_<tap key>",
            and whose outputs are a list, one per `output_names`.
        """
        leaders = list(tap_specs)
        inputs = {}
        for leader, taps in tap_specs.items():
            for key, tensor in taps.items():
                inputs[f"{leader}_{key}"] = keras.Input(
                    shape=tensor.shape[1:], dtype=tensor.dtype, name=f"{leader}_{key}"
                )
        self._check_model_name(leaders, inputs)
        soften = TemperatureSoftmax(self.temperature, name="probs") if "probs" in self.taps else None
        pools = {tap: POOLS[len(inputs[f"{leaders[0]}_{tap_key(tap)}"].shape)](name=f"pool_{tap_key(tap)}")
                 for tap in self.taps if len(self.taps) > 1 and len(inputs[f"{leaders[0]}_{tap_key(tap)}"].shape) > 2}
        join = keras.layers.Concatenate(name=JOIN) if len(self.taps) > 1 else None
        fed = []
        for leader in leaders:
            parts = [inputs[f"{leader}_{tap_key(tap)}"] for tap in self.taps]
            parts = [soften(x) if tap == "probs" else x for tap, x in zip(self.taps, parts)]
            parts = [pools[tap](x) if tap in pools else x for tap, x in zip(self.taps, parts)]
            fed.append(join(parts) if join else parts[0])
        if self.combine == "concat" and len(fed) > 1:
            shapes = {leader: tuple(x.shape[1:]) for leader, x in zip(leaders, fed)}
            if len({shape[:-1] for shape in shapes.values()}) > 1:
                raise KerasTeamError(
                    f"followers[{self.name}].combine", "concat", f"taps that differ only in their last axis, got {shapes}"
                )
            fed = [keras.layers.Concatenate(name="concat")(fed)]
        if self.combine == "each":
            shapes = {leader: tuple(x.shape[1:]) for leader, x in zip(leaders, fed)}
            if len(set(shapes.values())) > 1:
                raise KerasTeamError(
                    f"followers[{self.name}].combine", "each", f"taps of one shape for every leader, got {shapes}"
                )
        outputs = [self._apply(x) for x in fed]
        if self.distill:
            width = outputs[0].shape[-1]
            for leader in leaders:
                if num_classes[leader] != width:
                    raise KerasTeamError(
                        f"followers[{self.name}].distill",
                        f"{width} classes",
                        f"the class count of leader {leader!r} ({num_classes[leader]})",
                    )
            teachers = [inputs[f"{leader}_logits"] for leader in leaders]
            if self.combine == "each":
                outputs = [
                    Distillation(self.distill.temperature, self.distill.kl_weight, name=f"distill_{leader}")([out, teacher])
                    for out, teacher, leader in zip(outputs, teachers, leaders)
                ]
            else:
                outputs = [Distillation(self.distill.temperature, self.distill.kl_weight, name="distill")([outputs[0], *teachers])]
        return keras.Model(inputs, outputs, name=f"{self.name}_graph")

    def _check_model_name(self, leaders: list[str], inputs: dict) -> None:
        """The model's name must not be a name of the graph's own layers (Keras refuses a name used twice)."""
        own = {name: "an input of the follower's graph" for name in inputs}
        if "probs" in self.taps:
            own["probs"] = "the temperature softmax of its 'probs' tap"
        if len(self.taps) > 1:
            own[JOIN] = "the layer joining its taps"
            own.update({f"pool_{tap_key(tap)}": f"the pooling of its tap {tap!r}" for tap in self.taps})
        if self.combine == "concat" and len(leaders) > 1:
            own["concat"] = "the layer joining its leaders' taps"
        if self.distill:
            own.update({name: "its distillation layer" for name in
                        ([f"distill_{leader}" for leader in leaders] if self.combine == "each" else ["distill"])})
        if self.model.name in own:
            field, value = ("followers", self.name) if self.model.name == self.name else (
                f"followers[{self.name}].model", self.model.name)
            raise KerasTeamError(field, value, f"a name that is not a layer of the follower's own graph "
                                               f"({own[self.model.name]})")

    def _apply(self, x):
        built_shape = getattr(self.model, "input_shape", None) if self.model.built else None
        if built_shape is not None and tuple(built_shape[1:]) != tuple(x.shape[1:]):
            raise KerasTeamError(
                f"followers[{self.name}].model",
                f"input shape {tuple(built_shape[1:])}",
                f"the shape of its tap {self.tap!r}: {tuple(x.shape[1:])} (pass an unbuilt model to derive it)",
            )
        if not self.model.built:
            return self.model(x)
        try:  # a built plain layer (e.g. Dense) has no input_shape; its input spec rejects the tap
            return self.model(x)
        except ValueError as error:
            raise KerasTeamError(
                f"followers[{self.name}].model",
                f"a layer built for another input ({error})",
                f"a layer that accepts its tap {self.tap!r}: {tuple(x.shape[1:])} (pass an unbuilt layer to derive it)",
            ) from error

    def taps_needed(self) -> list[str]:
        """Taps the follower reads from each leader (logits too when distilling)."""
        needed = list(self.taps)
        if self.distill and "logits" not in {tap_key(tap) for tap in self.taps}:
            needed.append("logits")
        return needed

    def get_config(self) -> dict:
        """A serialisable description (the model serialised by Keras)."""
        return {
            "model": keras.saving.serialize_keras_object(self.model),
            "name": self.name,
            "leaders": list(self.leaders) if self.leaders is not None else None,
            "tap": self.tap,
            "temperature": self.temperature,
            "combine": self.combine,
            "distill": dataclasses.asdict(self.distill) if self.distill else None,
        }

    @classmethod
    def from_config(cls, config: dict) -> Follower:
        """Rebuild a follower from `get_config`."""
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"))
        distill = dict(config.get("distill") or {})
        if "alpha" in distill:  # saved before Distill took Keras' `student_loss_weight` (1 - alpha)
            distill["student_loss_weight"] = 1.0 - distill.pop("alpha")
            config["distill"] = distill
        return cls(model, **config)

    def __repr__(self) -> str:
        return f"Follower({self.name!r}, tap={self.tap!r}, leaders={self.leaders}, combine={self.combine!r})"
