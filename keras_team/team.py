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

import keras
from keras import ops

from keras_team.errors import KerasTeamError
from keras_team.followers import Follower, check_name
from keras_team.layers import PACKAGE, StopGradient
from keras_team.taps import tap_key, tap_model, tap_tensor


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

    Example:
        >>> team.compile()
        >>> history = team.fit(x, y, epochs=2)            # doctest: +SKIP
        >>> team.predict(x)["mlp"].shape                   # doctest: +SKIP
        (n, 5)
    """

    def __init__(self, leaders, followers=(), *, name: str = "team", **kwargs):
        # === Layers ===
        leaders = _as_leader_dict(leaders)
        followers = [Follower.from_config(f) if isinstance(f, dict) else f for f in followers]
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
        for name, model in leaders.items():
            _check_tap(model, "logits", f"leaders[{name}]")  # members output logits
        needed = {name: {"logits"} for name in leaders}
        for follower in followers:
            for leader in follower.leaders or leaders:
                for tap in follower.taps_needed():
                    _check_tap(leaders[leader], tap, f"followers[{follower.name}].tap")
                    needed[leader].add(tap_key(tap))
        taps = {name: tap_model(model, sorted(needed[name]), name=f"{name}_taps") for name, model in leaders.items()}

        # === Functional model ===
        inputs = _shared_input(leaders)
        tapped = {name: model(inputs) for name, model in taps.items()}
        # Outputs are float32 whatever the dtype policy (mixed precision computes inside).
        outputs = {name: keras.layers.Identity(name=name, dtype="float32")(tapped[name]["logits"]) for name in leaders}
        stopped = {
            name: {key: StopGradient(name=f"{name}_{key}_stop")(x) for key, x in values.items()}
            for name, values in tapped.items()
        }
        graphs = {}
        for follower in followers:
            read = list(follower.leaders or leaders)
            keys = {tap_key(tap) for tap in follower.taps_needed()}
            specs = {leader: {key: stopped[leader][key] for key in sorted(keys)} for leader in read}
            classes = {leader: tapped[leader]["logits"].shape[-1] for leader in read}
            graph = follower.build_graph(specs, classes)
            graphs[follower.name] = graph
            feed = {f"{leader}_{key}": x for leader, values in specs.items() for key, x in values.items()}
            results = graph(feed)
            results = results if isinstance(results, (list, tuple)) else [results]
            for output_name, result in zip(follower.output_names(read), results):
                outputs[output_name] = keras.layers.Identity(name=output_name, dtype="float32")(result)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        # === Config ===
        self.leaders = leaders
        self.followers = followers
        self.follower_graphs = graphs
        self.tap_models = taps
        self.member_names = list(leaders) + [f.name for f in followers]

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "leaders": {name: keras.saving.serialize_keras_object(m) for name, m in self.leaders.items()},
            "followers": [follower.get_config() for follower in self.followers],
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> Team:
        config = dict(config)
        leaders = {
            name: keras.saving.deserialize_keras_object(m, custom_objects=custom_objects)
            for name, m in config.pop("leaders").items()
        }
        return cls(leaders, config.pop("followers"), **config)

    def loss_weight_defaults(self) -> dict[str, float]:
        """1 per output; (1 - alpha) for the label loss of a distilled follower."""
        weights = {name: 1.0 for name in self.leaders}
        for follower in self.followers:
            weight = 1.0 - follower.distill.alpha if follower.distill else 1.0
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
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
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
            weights.update({target: float(weight) for target in targets})
        super().compile(
            optimizer=optimizer,
            loss={name: loss[name] for name in outputs},
            loss_weights={name: weights[name] for name in outputs},
            metrics={name: metrics.get(name, []) for name in outputs},
            **kwargs,
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
    def ensemble(predictions: dict) -> keras.KerasTensor:
        """Mean of the members' softmax probabilities (members with one class count).

        Example:
            >>> probs = Team.ensemble(team.predict(x))           # doctest: +SKIP
        """
        return ops.mean(ops.stack([ops.softmax(p, axis=-1) for p in predictions.values()]), axis=0)
