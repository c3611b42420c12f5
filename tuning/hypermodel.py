"""A KerasTuner hypermodel over the cut, the head and the two-phase fine-tune.

One trial is the Keras transfer-learning recipe: train a new head on the
frozen kept part of the leader, then unfreeze its top `k` weighted layers and
fine-tune at a lower rate. The cut is a `hp.Choice` over the leader's cut
points by layer name (never inside a residual block, never the output), the
unfreeze depth is conditional on the cut (never more than it keeps), and the
epochs a tuner grants (`search(epochs=...)`, or Hyperband's `tuner/epochs`)
are shared by both phases. While the cut is frozen the head trains on the
cut's features from a `FeatureCache`: computed once per (kept weights, cut,
data) for all trials and epochs. The weights KerasTuner checkpoints are the
full model's, so `tuner.get_best_models()` predicts on raw inputs.

Example:
    >>> import keras_tuner as kt
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    >>> hypermodel = TransferHyperModel(leader, 5, cuts=["pool2", "fc1"])
    >>> tuner = kt.RandomSearch(hypermodel, "val_accuracy", max_trials=1,
    ...                         directory=tmp, project_name="demo")
    >>> tuner.search(x, y, validation_data=(xv, yv), epochs=1, verbose=0)
    >>> tuner.get_best_hyperparameters()[0].get("cut") in ("pool2", "fc1")
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from keras_team import heads
from keras_team.cuts import CutPoint, cut_points
from keras_team.errors import KerasTeamError
from keras_team.freezing import unfreeze
from keras_team.heads import LOSS
from keras_team.transfers import transfer
from keras_team.tuning.feature_cache import FeatureCache

CACHE_OFF_NOTE = (
    "feature cache: OFF for this search: the training data is a tf.data.Dataset "
    "(augmented or streamed), so every epoch runs the frozen kept layers"
)


def searchable_cuts(leader: keras.Model, allowed: Sequence[str] | None = None) -> list[CutPoint]:
    """The cuts a search may choose: cut points keeping >= 1 weighted layer, not the output.

    Args:
        leader: the trained source model.
        allowed: restrict to these cut-point layer names (None: all).

    Example:
        >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
        >>> [c.name for c in searchable_cuts(leader)]
        ['conv1', 'pool1', 'conv2', 'pool2', 'flatten', 'fc1', 'fc2']
    """
    cuts = [c for c in cut_points(leader)[:-1] if c.depth >= 1]  # the last cut is the output
    if not cuts:
        raise KerasTeamError(
            "leader", leader.name, "a model with a cut point that keeps a weighted layer, before its output"
        )
    if allowed is None:
        return cuts
    names = [c.name for c in cuts]
    if isinstance(allowed, str):
        allowed = [allowed]
    unknown = [name for name in allowed if name not in names]
    if unknown:
        raise KerasTeamError("cuts", unknown[0], f"a cut-point layer name of {leader.name!r}: {', '.join(names)}")
    chosen = [c for c in cuts if c.name in set(allowed)]
    if not chosen:
        raise KerasTeamError("cuts", list(allowed), f"a non-empty list from {', '.join(names)} (the search space is empty)")
    return chosen


def _choices(field: str, values: Sequence) -> list:
    values = list(values)
    if not values:
        raise KerasTeamError(field, values, "a non-empty list of values (the search space is empty)")
    return values


def unfreeze_name(depth: int) -> str:
    """The hyperparameter holding the unfreeze depth of cuts that keep `depth` weighted layers.

    Example:
        >>> unfreeze_name(3)
        'unfreeze_of_3'
    """
    return f"unfreeze_of_{depth}"


def epoch_split(initial_epoch: int, epochs: int, unfreeze_top: int, fine_tune_fraction: float) -> int:
    """The epoch at which fine-tuning starts within `[initial_epoch, epochs)`.

    The head phase keeps at least one epoch; fine-tuning gets
    `ceil(fine_tune_fraction * budget)` of the rest when `unfreeze_top > 0`.

    Example:
        >>> epoch_split(0, 10, 2, 0.5), epoch_split(0, 10, 0, 0.5), epoch_split(2, 3, 1, 0.5)
        (5, 10, 3)
    """
    budget = epochs - initial_epoch
    if not unfreeze_top or budget < 2:
        return epochs
    return epochs - min(math.ceil(fine_tune_fraction * budget), budget - 1)


class _OnFullModel(keras.callbacks.Callback):
    """Forwards the head-only phase's epoch events to callbacks that see the full model.

    KerasTuner's checkpoint callback saves `self.model`'s weights: while the
    head trains on cached features that must still be the full model (the
    head's layers are shared between the two).
    """

    def __init__(self, callbacks: Sequence[keras.callbacks.Callback], full_model: keras.Model):
        super().__init__()
        self.full_model = full_model
        self.inner = keras.callbacks.CallbackList(list(callbacks), model=full_model)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)
        if getattr(self.full_model, "stop_training", False):
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)


def _joined(histories: list[keras.callbacks.History]) -> keras.callbacks.History:
    joined = keras.callbacks.History()
    joined.epoch = [epoch for history in histories for epoch in history.epoch]
    for history in histories:
        for key, values in history.history.items():
            joined.history.setdefault(key, []).extend(values)
    return joined


class TransferHyperModel(kt.HyperModel):
    """Searches the cut, the head and the two-phase fine-tune of a transfer.

    Every list below is the set of values a `hp.Choice` offers (GridSearch
    enumerates them; a list of one value fixes it).

    Args:
        leader: the trained source model (copied per trial, never changed).
        num_classes: classes of the target task.
        cuts: restrict the cut to these layer names (default: every cut point
            that keeps a weighted layer, except the output).
        head_layers: numbers of hidden Dense layers in the head (0 = linear).
        head_units: widths of those hidden layers.
        dropout: dropout rates of the head.
        learning_rate: learning rates of the head phase.
        max_unfreeze: most kept weighted layers to fine-tune; per cut the
            choice is `0..min(max_unfreeze, layers the cut keeps)`.
        fine_tune_learning_rate: learning rates of the fine-tuning phase.
        fine_tune_fraction: share of a trial's epochs spent fine-tuning when
            it unfreezes anything (the head phase keeps at least one epoch).
        metrics: compiled metrics; the objective must be one of them, or a
            loss, with or without the `val_` prefix.
        cache: a `FeatureCache`, True (one in a temporary directory; tuners
            made by `keras_team.tuning.make_tuner` put it under the tuner's
            directory) or False (the head phase runs the full model).
        seed: seeds every trial's head initialisation.
        run_eagerly: compile without `tf.function` tracing; faster when an
            epoch is a batch or two (few-shot data), slower on real data.

    Example:
        >>> leader = keras_team.zoo.residual_cnn((8, 8, 1), 5)
        >>> hypermodel = TransferHyperModel(leader, 5, cuts=["pool1"], max_unfreeze=1)
        >>> model = hypermodel.build(kt.HyperParameters())
        >>> model.output_shape
        (None, 5)
    """

    def __init__(
        self,
        leader: keras.Model,
        num_classes: int,
        *,
        cuts: Sequence[str] | None = None,
        head_layers: Sequence[int] = (0, 1),
        head_units: Sequence[int] = (32, 64),
        dropout: Sequence[float] = (0.0, 0.25),
        learning_rate: Sequence[float] = (1e-3, 3e-3, 1e-2),
        max_unfreeze: int = 2,
        fine_tune_learning_rate: Sequence[float] = (1e-4, 1e-5),
        fine_tune_fraction: float = 0.5,
        metrics: Sequence[str] = ("accuracy",),
        cache: FeatureCache | bool = True,
        seed: int = 0,
        run_eagerly: bool = False,
        name: str = "transfer",
    ):
        super().__init__(name=name)
        self.leader = leader
        self.num_classes = num_classes
        self.cuts = searchable_cuts(leader, cuts)
        self.head_layers = _choices("head_layers", head_layers)
        self.head_units = _choices("head_units", head_units)
        self.dropout = _choices("dropout", dropout)
        self.learning_rate = _choices("learning_rate", learning_rate)
        self.fine_tune_learning_rate = _choices("fine_tune_learning_rate", fine_tune_learning_rate)
        deepest = max(c.depth for c in self.cuts)
        if isinstance(max_unfreeze, bool) or not isinstance(max_unfreeze, int) or not 0 <= max_unfreeze <= deepest:
            raise KerasTeamError(
                "max_unfreeze", max_unfreeze,
                f"an int from 0 to {deepest} (the weighted layers the deepest allowed cut keeps)",
            )
        self.max_unfreeze = max_unfreeze
        if not 0 < fine_tune_fraction < 1:
            raise KerasTeamError("fine_tune_fraction", fine_tune_fraction, "a number strictly between 0 and 1")
        self.fine_tune_fraction = fine_tune_fraction
        self.metrics = list(metrics)
        self.cache = FeatureCache() if cache is True else (cache or None)
        self.seed = seed
        self.run_eagerly = run_eagerly
        self.last_cache = "off"  # "hit", "miss" or "off": the last trial's feature lookups
        self._said_cache_off = False

    # --- the search space ------------------------------------------------
    def reported_metrics(self) -> list[str]:
        """Names an objective may take: the loss and metrics, with and without `val_`.

        Example:
            >>> TransferHyperModel(keras_team.zoo.seed_cnn((8, 8, 1), 5), 5).reported_metrics()
            ['loss', 'accuracy', 'val_loss', 'val_accuracy']
        """
        names = ["loss", *[m if isinstance(m, str) else m.name for m in self.metrics]]
        return names + [f"val_{name}" for name in names]

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> dict:
        """Declare the search space on `hp` (KerasTuner's hook); return this trial's values, resolved."""
        cut = hp.Choice("cut", [c.name for c in self.cuts])
        depth = {c.name: c.depth for c in self.cuts}
        layers = hp.Choice("head_layers", self.head_layers)
        units = None
        deep = [n for n in self.head_layers if n > 0]
        if deep:
            with hp.conditional_scope("head_layers", deep):
                units = hp.Choice("head_units", self.head_units)
        top = 0
        if self.max_unfreeze:
            for kept in sorted(set(depth.values())):
                with hp.conditional_scope("cut", [n for n, d in depth.items() if d == kept]):
                    value = hp.Int(unfreeze_name(kept), 0, min(self.max_unfreeze, kept))
                if kept == depth[cut]:
                    top = value
        return {
            "cut": cut,
            "head_layers": layers,
            "head_units": units if layers else None,
            "dropout": hp.Choice("dropout", self.dropout),
            "learning_rate": hp.Choice("learning_rate", self.learning_rate),
            "unfreeze": top,
            "fine_tune_learning_rate": (
                hp.Choice("fine_tune_learning_rate", self.fine_tune_learning_rate) if self.max_unfreeze else None
            ),
        }

    def chosen(self, values: dict) -> dict:
        """A trial's resolved settings from its hyperparameter values (e.g. `trial.hyperparameters.values`).

        Example:
            >>> hm = TransferHyperModel(keras_team.zoo.seed_cnn((8, 8, 1), 5), 5, cuts=["pool2"])
            >>> hm.chosen({"cut": "pool2", "head_layers": 0, "unfreeze_of_2": 1})["unfreeze"]
            1
        """
        hp = kt.HyperParameters()
        hp.values.update(values)
        return self.declare_hyperparameters(hp)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """The leader cut at `hp`'s cut (copied, frozen) plus a new dense head, compiled."""
        chosen = self.declare_hyperparameters(hp)
        # Seeded by its initializers: KerasTuner builds more than once per trial, and the
        # global random state (the user's, the oracle's) is not ours to reset.
        head = heads.dense(
            self.num_classes,
            hidden=(chosen["head_units"],) * chosen["head_layers"],
            dropout=chosen["dropout"],
            seed=self.seed,
        )
        model = transfer(self.leader, chosen["cut"], head, name=f"{self.name}_{chosen['cut']}")
        model.compile(keras.optimizers.Adam(chosen["learning_rate"]), LOSS, metrics=self.metrics, run_eagerly=self.run_eagerly)
        return model

    # --- one trial ---------------------------------------------------------
    def fit(
        self,
        hp: kt.HyperParameters,
        model: keras.Model,
        x,
        y=None,
        *,
        validation_data=None,
        epochs: int = 1,
        initial_epoch: int = 0,
        batch_size: int = 32,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose="auto",
        **kwargs,
    ) -> keras.callbacks.History:
        """Head on the frozen cut, then the top `k` kept layers at the fine-tune rate.

        `epochs`/`initial_epoch` (Hyperband sets them per round) bound both
        phases together. Returns one `History` over both phases.
        """
        chosen = self.declare_hyperparameters(hp)
        split = epoch_split(initial_epoch, epochs, chosen["unfreeze"], self.fine_tune_fraction)
        common = dict(batch_size=batch_size, callbacks=list(callbacks), verbose=verbose, **kwargs)
        histories = []
        self.last_cache = "off"
        if split > initial_epoch:
            if self._cacheable(x, validation_data):
                histories.append(self._fit_head_on_features(
                    model, chosen["learning_rate"], x, y, validation_data, initial_epoch, split, common))
            else:
                histories.append(model.fit(x, y, validation_data=validation_data, epochs=split,
                                           initial_epoch=initial_epoch, **common))
        if epochs > split:
            unfreeze(model, top=chosen["unfreeze"])
            model.compile(keras.optimizers.Adam(chosen["fine_tune_learning_rate"]), LOSS, metrics=self.metrics, run_eagerly=self.run_eagerly)
            histories.append(model.fit(x, y, validation_data=validation_data, epochs=epochs,
                                       initial_epoch=split, **common))
        return _joined(histories)

    def _cacheable(self, x, validation_data) -> bool:
        if self.cache is None:
            return False
        streamed = isinstance(x, tf.data.Dataset) or not isinstance(validation_data, (tuple, list))
        if streamed and not self._said_cache_off:
            print(CACHE_OFF_NOTE, flush=True)
            self._said_cache_off = True
        return not streamed

    def _fit_head_on_features(self, model, learning_rate, x, y, validation_data, initial_epoch, split, common):
        body, head = model.body, model.head
        hits = self.cache.hits
        x_val, y_val = validation_data[:2]
        features = self.cache.features(body, x)
        val_features = self.cache.features(body, x_val)
        self.last_cache = "hit" if self.cache.hits == hits + 2 else "miss"
        inputs = keras.Input(features.shape[1:], name="features")
        head_model = keras.Model(inputs, head(inputs), name=f"{model.name}_head")
        head_model.compile(keras.optimizers.Adam(learning_rate), LOSS, metrics=self.metrics, run_eagerly=self.run_eagerly)
        callbacks = [_OnFullModel(common["callbacks"], model)]
        return head_model.fit(
            np.asarray(features, "float32"), y,
            validation_data=(np.asarray(val_features, "float32"), y_val),
            epochs=split, initial_epoch=initial_epoch, **{**common, "callbacks": callbacks},
        )
