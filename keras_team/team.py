"""The Team: leaders and followers as one functional Keras model.

One named output per member; `compile` takes a loss per member and loss
weights (team loss = the weighted sum); labels given once are used by every
member. Each leader runs once per batch and all followers read its taps,
through a stop-gradient: no follower ever changes a leader.

Example:
    >>> leader = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=3,
    ...                              head=keras_team.heads.dense(5))
    >>> team = Team({"leader": leader}, [Follower(keras_team.zoo.mlp(5))])
    >>> team.member_names
    ['leader', 'mlp']
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_team import dtypes
from keras_team.errors import KerasTeamError
from keras_team.followers import Follower, check_name
from keras_team.graph import output_layer, producer
from keras_team.heads import LOSS
from keras_team.layers import PACKAGE, LeaderTaps, StopGradient
from keras_team.taps import tap_key, tap_model, tap_tensor
from keras_team.transfers import copy_model, refreeze


def _as_leader_dict(leaders) -> dict[str, keras.Model]:
    if isinstance(leaders, keras.Model):
        leaders = {"leader": leaders}
    elif isinstance(leaders, (list, tuple)):
        names = [getattr(model, "name", model) for model in leaders]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise KerasTeamError("leaders", repeated, "models with distinct names, or a dict name -> model")
        leaders = {model.name: model for model in leaders}
    if not isinstance(leaders, dict) or not leaders:
        raise KerasTeamError("leaders", leaders, "a model, a list of models or a non-empty dict name -> model")
    for name, model in leaders.items():
        check_name("leaders", name)
        if not isinstance(model, keras.Model):
            raise KerasTeamError(f"leaders[{name}]", model, "a built keras.Model")
    return dict(leaders)


def _check_tap(leader: keras.Model, tap: str, field: str) -> None:
    try:
        tap_tensor(leader, tap)
    except KerasTeamError as error:
        raise KerasTeamError(field, tap, error.allowed) from error


def _shared_input(leaders: dict[str, keras.Model]) -> keras.KerasTensor:
    signatures = {}
    for name, model in leaders.items():
        if len(model.inputs) != 1:
            raise KerasTeamError(f"leaders[{name}]", f"{len(model.inputs)} inputs", "a model with one input")
        spec = model.inputs[0]
        signatures[name] = (tuple(spec.shape[1:]), spec.dtype)
    if len(set(signatures.values())) > 1:
        raise KerasTeamError("leaders", signatures, "leaders that all take the same input shape and dtype")
    shape, dtype = next(iter(signatures.values()))
    return keras.Input(shape=shape, dtype=dtype, name=next(iter(leaders.values())).inputs[0].name)


def _internal_names(leaders: dict[str, keras.Model], followers: list[Follower]) -> dict[str, str]:
    """Names of the Team's own layers, each with what it is (members must not take them)."""
    names = {}
    for leader_name, model in leaders.items():
        names[model.inputs[0].name] = "the team's input"
        names[f"{leader_name}_taps"] = f"the taps of leader {leader_name!r}"
        names[f"{leader_name}_tap_model"] = f"the tap model of leader {leader_name!r}"
        for key in ("features", "logits", *(tap for f in followers for tap in f.taps)):
            names[f"{leader_name}_{tap_key(key)}_stop"] = f"the stop-gradient of leader {leader_name!r}"
    for follower in followers:
        names[f"{follower.name}_graph"] = f"the sub-model of follower {follower.name!r}"
    return names


def _check_members(leaders: dict[str, keras.Model], followers: list) -> None:
    """Every member has a free name and valid leaders; each output name is used once."""
    names = list(leaders)  # member and output names: each names one team output
    for follower in followers:
        if not isinstance(follower, Follower):
            raise KerasTeamError("followers", follower, "keras_team.Follower objects")
        if follower.name in names:
            raise KerasTeamError("followers", follower.name, f"a member name not used already ({', '.join(names)})")
        unknown = set(follower.leaders or ()) - set(leaders)
        if unknown:
            raise KerasTeamError(
                f"followers[{follower.name}].leaders", sorted(unknown), f"names of the team's leaders: {', '.join(leaders)}"
            )
        own = [follower.name, *follower.output_names(list(follower.leaders or leaders))]
        taken = [name for name in dict.fromkeys(own[1:]) if name in names]
        if taken:
            raise KerasTeamError(
                "followers", follower.name, f"a member whose output names {taken} are not used already ({', '.join(names)})"
            )
        names.extend(dict.fromkeys(own))
    internal = _internal_names(leaders, followers)
    for name in names:
        if name in internal:
            field = "leaders" if name in leaders else "followers"
            raise KerasTeamError(field, name, f"a member name that is not a layer of the team's own ({internal[name]})")


def _loss_weight(name: str, weight) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise KerasTeamError(f"loss_weights[{name}]", weight, "a finite number >= 0")
    return value


def _is_sparse_crossentropy(loss) -> bool:
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return True
    return loss in ("sparse_categorical_crossentropy", keras.losses.sparse_categorical_crossentropy)


class Weighting(NamedTuple):
    """How `Team.ensemble` weighs the outputs: output name -> weight, the rule used, its validation accuracy."""

    weights: dict[str, float]
    rule: str
    validation_accuracy: float


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _clearly_better(a: np.ndarray, b: np.ndarray, *, standard_errors: float) -> bool:
    """Whether per-example hits `a` beat `b` by more than `standard_errors` standard errors of their paired difference."""
    difference = a.astype("float64") - b
    return difference.mean() > standard_errors * math.sqrt(difference.var() / len(difference)) + 1e-12


def _fresh(metric):
    """An unshared copy of a metric object (names and functions are kept as they are)."""
    if isinstance(metric, keras.metrics.Metric):
        return metric.__class__.from_config(metric.get_config())
    return metric


@keras.saving.register_keras_serializable(PACKAGE)
class Team(keras.Model):
    """Leaders and followers trained together on the target task.

    Args:
        leaders: a model (named "leader"), a list of models (named by their
            `name`) or a dict name -> model; each predicts the target task.
        followers: `Follower`s reading the leaders' taps.
        name: model name.
        dtype: a dtype policy for the whole team, e.g. "mixed_float16"
            (see `keras_team.dtypes`): set on every layer of copies of the
            leaders (the models passed are left unchanged, as `transfer`
            leaves its leader) and of the followers' models, except the
            layers computing their logits, which stay float32 as the
            team's outputs do. None leaves each layer's own policy (and
            the team uses the leaders passed, not copies).

    Example:
        >>> leader = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=3,
        ...                              head=keras_team.heads.dense(5))
        >>> team = Team(leader, [Follower(keras_team.zoo.mlp(5), tap="logits")], name="my_team")
        >>> team.compile()
        >>> x, y = np.zeros((4, 8, 8, 1)), np.array([0, 1, 2, 3])
        >>> history = team.fit(x, y, epochs=1, verbose=0)
        >>> {name: p.shape for name, p in team.predict(x, verbose=0).items()}
        {'leader': (4, 5), 'mlp': (4, 5)}
    """

    def __init__(self, leaders, followers=(), *, name: str = "team", dtype=None, **kwargs):
        # === Layers ===
        policy = dtypes.policy(dtype)
        leaders = _as_leader_dict(leaders)
        if policy is not None:  # the policy goes on copies: the caller's leaders stay as they are
            leaders = {leader_name: copy_model(model) for leader_name, model in leaders.items()}
        followers = [Follower.from_config(f) if isinstance(f, dict) else f for f in followers]
        _check_members(leaders, followers)
        for leader_name, model in leaders.items():
            _check_tap(model, "logits", f"leaders[{leader_name}]")  # members output logits
        needed = {leader_name: {"logits"} for leader_name in leaders}
        for follower in followers:
            for leader_name in follower.leaders or leaders:
                for tap in follower.taps_needed():
                    _check_tap(leaders[leader_name], tap, f"followers[{follower.name}].tap")
                    needed[leader_name].add(tap)  # tap_model keys it by tap_key
        taps = {
            leader_name: tap_model(model, sorted(needed[leader_name]), name=f"{leader_name}_tap_model")
            for leader_name, model in leaders.items()
        }
        if policy is not None:
            logits = [output_layer(producer(tap_tensor(model, "logits")).operation) for model in leaders.values()]
            logits += [output_layer(follower.model) for follower in followers]
            dtypes.apply([*leaders.values(), *taps.values(), *(f.model for f in followers)], policy, float32=logits)

        # === Functional model ===
        inputs = _shared_input(leaders)
        outputs, stopped, logit_widths = {}, {}, {}
        for leader_name, model in taps.items():
            own, tapped = LeaderTaps(model, name=f"{leader_name}_taps", dtype=policy)(inputs)
            # Outputs are float32 whatever the dtype policy (mixed precision computes inside): a float32
            # linear activation, as Keras' mixed precision guide ends a model (Identity's spec keeps float16).
            outputs[leader_name] = keras.layers.Activation("linear", name=leader_name, dtype="float32")(own)
            logit_widths[leader_name] = own.shape[-1]
            stopped[leader_name] = {
                key: StopGradient(name=f"{leader_name}_{key}_stop", dtype=policy)(x) for key, x in tapped.items()
            }
        graphs = {}
        for follower in followers:
            read = list(follower.leaders or leaders)
            keys = {tap_key(tap) for tap in follower.taps_needed()}
            specs = {leader: {key: stopped[leader][key] for key in sorted(keys)} for leader in read}
            graph = follower.build_graph(specs, {leader: logit_widths[leader] for leader in read})
            graphs[follower.name] = graph
            feed = {f"{leader}_{key}": x for leader, values in specs.items() for key, x in values.items()}
            results = graph(feed)
            results = results if isinstance(results, (list, tuple)) else [results]
            for output_name, result in zip(follower.output_names(read), results):
                outputs[output_name] = keras.layers.Activation("linear", name=output_name, dtype="float32")(result)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        if policy is not None:  # the followers' own layers (softmax, concat, distillation) and the team's
            dtypes.apply(graphs.values(), policy, float32=logits)
            self.dtype_policy = policy  # a functional model drops `dtype`; `compile` reads it (loss scaling)

        # === Config ===
        self.leaders = leaders
        self.followers = followers
        self.follower_graphs = graphs
        self.tap_models = taps
        self.member_names = list(leaders) + [f.name for f in followers]
        self.given_dtype = None if policy is None else policy.name

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": self.given_dtype,
            "leaders": {name: keras.saving.serialize_keras_object(m) for name, m in self.leaders.items()},
            "followers": [follower.get_config() for follower in self.followers],
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> Team:
        config = dict(config)
        leaders = {
            name: refreeze(keras.saving.deserialize_keras_object(m, custom_objects=custom_objects))
            for name, m in config.pop("leaders").items()
        }
        return cls(leaders, config.pop("followers"), **config)

    def member_outputs(self) -> dict[str, list[str]]:
        """Member name -> its output names: a leader's one, a follower's one (or one per leader for "each").

        Example:
            >>> team.member_outputs()
            {'leader': ['leader'], 'mlp': ['mlp']}
        """
        owned = {name: [name] for name in self.leaders}
        for follower in self.followers:
            owned[follower.name] = follower.output_names(list(follower.leaders or self.leaders))
        return owned

    def loss_weight_defaults(self) -> dict[str, float]:
        """1 per output; `student_loss_weight` for the label loss of a distilled follower."""
        weights = {name: 1.0 for name in self.leaders}
        for follower in self.followers:
            weight = follower.distill.student_loss_weight if follower.distill else 1.0
            for output in follower.output_names(list(follower.leaders or self.leaders)):
                weights[output] = weight
        return weights

    def compile(self, optimizer="auto", loss="auto", loss_weights=None, metrics="auto", **kwargs):
        """Compile with per-member losses; "auto" means Adam, logits cross-entropy, accuracy.

        Args:
            optimizer: an optimizer or "auto" (Adam, learning rate 1e-3).
            loss: a loss for every output, a dict per output, or "auto".
            loss_weights: dict member/output name -> weight; a follower's name
                sets all of its outputs. Unnamed outputs keep the defaults.
            metrics: a metric list for every output, a dict, or "auto".
        """
        outputs = list(self.output_names)
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(1e-3)
        if loss == "auto":
            loss = LOSS
        if not isinstance(loss, dict):
            loss = {name: loss for name in outputs}
        missing = [name for name in outputs if name not in loss]
        if missing:
            raise KerasTeamError("loss", sorted(loss), f"a loss for every output: {', '.join(outputs)}")
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if not isinstance(metrics, dict):
            # A metric object holds state: each output needs its own copy.
            metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics] if metrics else []
            metrics = {name: [_fresh(metric) for metric in metrics] for name in outputs}
        weights = self.loss_weight_defaults()
        groups = {f.name: f.output_names(list(f.leaders or self.leaders)) for f in self.followers}
        for name, weight in (loss_weights or {}).items():
            targets = groups.get(name, [name] if name in outputs else None)
            if targets is None:
                allowed = ", ".join(dict.fromkeys([*self.member_names, *outputs]))
                raise KerasTeamError("loss_weights", name, f"member or output names: {allowed}")
            weights.update({target: _loss_weight(name, weight) for target in targets})
        self.sparse_label_outputs = [name for name in outputs if _is_sparse_crossentropy(loss[name])]
        super().compile(
            optimizer=optimizer,
            loss={name: loss[name] for name in outputs},
            loss_weights={name: weights[name] for name in outputs},
            metrics={name: metrics.get(name, []) for name in outputs},
            **kwargs,
        )

    def fit(self, x=None, y=None, *args, **kwargs) -> keras.callbacks.History:
        """`keras.Model.fit`, after checking array inputs.

        Arrays (numpy, tensors, lists) are checked first: no examples, or a
        class label outside ``[0, classes)`` of an output trained with sparse
        cross-entropy, raise `KerasTeamError` in one line. A `tf.data.Dataset`
        or generator is passed on unchecked (TensorFlow reports a bad label).

        Example:
            >>> team = Team(keras_team.zoo.seed_cnn((8, 8, 1), 3))
            >>> team.compile()
            >>> team.fit(np.zeros((2, 8, 8, 1)), np.array([0, 3]))
            Traceback (most recent call last):
            keras_team.errors.KerasTeamError: y=3 is not valid: expected class labels in [0, 2] ('leader' has 3 classes)
        """
        self._check_arrays("x", "y", x, y)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            self._check_arrays("validation_data[0]", "validation_data[1]", *validation[:2])
        return super().fit(x, y, *args, **kwargs)

    def _check_arrays(self, x_field: str, y_field: str, x, y) -> None:
        first = next(iter(x.values()), None) if isinstance(x, dict) else x
        if (first is None or not hasattr(first, "__len__") or isinstance(first, keras.utils.PyDataset)
                or hasattr(first, "element_spec")):  # a tf.data.Dataset (len() fails on a repeated one)
            return  # a dataset or generator: left to Keras and TensorFlow
        if len(first) == 0:
            raise KerasTeamError(x_field, "0 examples", "at least one example to train on")
        if y is None:
            return
        widths = dict(zip(self.output_names, (output.shape[-1] for output in self.outputs)))
        for name in getattr(self, "sparse_label_outputs", ()):
            labels = np.asarray(y[name] if isinstance(y, dict) else y)
            if labels.size == 0 or not np.issubdtype(labels.dtype, np.number):
                continue
            outside = labels[(labels < 0) | (labels >= widths[name])]
            if outside.size:
                raise KerasTeamError(
                    y_field, outside.flat[0].item(), f"class labels in [0, {widths[name] - 1}] ({name!r} has {widths[name]} classes)"
                )

    def compile_from_config(self, config: dict) -> None:
        """Recompile a loaded team as it was compiled when saved."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _per_output(self, y):
        if isinstance(y, dict):
            return y
        return {name: y for name in self.output_names}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, self._per_output(y), y_pred, sample_weight, training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, self._per_output(y), y_pred, sample_weight)

    @staticmethod
    def ensemble(predictions: dict, weights: dict[str, float] | None = None) -> keras.KerasTensor:
        """The members' softmax probabilities averaged with `weights` (None: equal weights).

        Args:
            predictions: output name -> logits, e.g. `team.predict(x)`.
            weights: output name -> weight >= 0 (see `Team.ensemble_weights`);
                outputs it leaves out weigh 0. None weighs every output alike.

        Example:
            >>> uniform, skewed = np.zeros((1, 2)), np.log([[1.0, 3.0]])  # [0.5, 0.5], [0.25, 0.75]
            >>> keras.ops.convert_to_numpy(Team.ensemble({"a": uniform, "b": skewed})).round(3).tolist()
            [[0.375, 0.625]]
            >>> keras.ops.convert_to_numpy(Team.ensemble({"a": uniform, "b": skewed}, {"b": 1.0})).round(3).tolist()
            [[0.25, 0.75]]
        """
        names = list(predictions)
        if weights is None:
            weights = {name: 1.0 for name in names}
        unknown = sorted(set(weights) - set(names))
        values = np.array([weights.get(name, 0.0) for name in names], dtype="float32")
        if unknown or not np.all(np.isfinite(values)) or values.min() < 0 or values.sum() <= 0:
            raise KerasTeamError("weights", weights, f"weights >= 0, not all 0, of the outputs {', '.join(names)}")
        probabilities = ops.stack([ops.softmax(ops.convert_to_tensor(predictions[name], "float32"), axis=-1)
                                   for name in names])
        return ops.tensordot(ops.convert_to_tensor(values / values.sum()), probabilities, axes=1)

    @staticmethod
    def ensemble_weights(predictions: dict, labels, *, max_picks: int = 10) -> Weighting:
        """Ensemble weights chosen on validation data: a member that does not help weighs 0.

        Validation accuracy is a noisy estimate (one standard error is about
        3 points on 120 examples), so the rule prefers the more averaged
        choice unless the validation data can tell the choices apart:

        1. Members clearly worse than the best member (validation accuracy
           lower by more than two standard errors of the paired, per-example
           difference) weigh 0.
        2. The others are averaged with equal weights ("mean of the best"),
           unless greedy ensemble selection with replacement (Caruana et al.,
           ICML 2004: from the best member, add the member whose addition
           raises validation accuracy most, while it strictly raises it, at
           most `max_picks` picks) beats that mean on validation by more than
           one standard error ("greedy selection"; the one-standard-error rule
           of Breiman et al., 1984). A member's weight is then its share of
           the picks.

        On validation the ensemble is thus never below its best member by
        more than one standard error (at most ``1/sqrt(n)`` for n examples);
        with few validation examples the standard errors are wide and the rule
        keeps the mean of the members that are not clearly worse. Without
        validation examples: equal weights ("equal weights, no validation").

        Args:
            predictions: output name -> validation logits (`team.predict(x_val)`).
            labels: the validation class labels.
            max_picks: the most picks of the greedy selection.

        Returns:
            A `Weighting(weights, rule, validation_accuracy)`; `weights` has
            every output name and sums to 1.

        Example:
            >>> labels = np.array([0, 1] * 10)
            >>> good = np.eye(2)[labels] * 4.0  # right on every example
            >>> useless = np.zeros((20, 2))  # the same for every example
            >>> Team.ensemble_weights({"good": good, "useless": useless}, labels)
            Weighting(weights={'good': 1.0, 'useless': 0.0}, rule='mean of the best', validation_accuracy=1.0)
        """
        names = list(predictions)
        if not names:
            raise KerasTeamError("predictions", predictions, "a dict output name -> logits with at least one output")
        labels = np.asarray(labels).reshape(-1)
        probabilities = {name: _softmax(np.asarray(predictions[name], dtype="float64")) for name in names}
        shapes = {name: p.shape for name, p in probabilities.items()}
        if len(set(shapes.values())) > 1 or any(shape != (len(labels), shape[-1]) for shape in shapes.values()):
            raise KerasTeamError("predictions", shapes, f"logits of one shape (examples, classes) for the {len(labels)} labels")
        if not len(labels):
            return Weighting({name: 1 / len(names) for name in names}, "equal weights, no validation", math.nan)

        def right(p: np.ndarray) -> np.ndarray:
            return np.argmax(p, axis=-1) == labels

        def score(p: np.ndarray) -> tuple[float, float]:  # higher is better: accuracy, then -log-loss
            return float(np.mean(right(p))), float(np.mean(np.log(p[np.arange(len(labels)), labels] + 1e-12)))

        scores = {name: score(p) for name, p in probabilities.items()}
        best = max(names, key=lambda name: scores[name])  # max keeps the first of equals: team order
        kept = [name for name in names
                if not _clearly_better(right(probabilities[best]), right(probabilities[name]), standard_errors=2)]
        mean = sum(probabilities[name] for name in kept) / len(kept)
        picks, total, current = [best], probabilities[best].copy(), scores[best]
        while len(picks) < max_picks:
            trial = {name: score((total + probabilities[name]) / (len(picks) + 1)) for name in kept}
            pick = max(kept, key=lambda name: trial[name])
            if trial[pick][0] <= current[0]:
                break
            picks.append(pick)
            total += probabilities[pick]
            current = trial[pick]
        if _clearly_better(right(total), right(mean), standard_errors=1):
            weights, rule = {name: picks.count(name) / len(picks) for name in names}, "greedy selection"
        else:
            weights, rule = {name: float(name in kept) / len(kept) for name in names}, "mean of the best"
        return Weighting(weights, rule, score(sum(weights[name] * probabilities[name] for name in names))[0])
