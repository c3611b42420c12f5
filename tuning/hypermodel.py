"""A KerasTuner hypermodel over the cut, the head and the two-phase fine-tune.

One trial is the Keras transfer-learning recipe: train a new head on the
frozen kept part of the leader, then unfreeze its top `unfreeze` weighted
layers and fine-tune at a lower rate. The space is declared in KerasTuner's
`declare_hyperparameters` hook and nothing in it is conditional on the cut,
so a tuner's constructor builds one model, not one per conditional scope:

- `cut`: the leader's block view (`keras_team.cut_points(leader,
  view="blocks")`: one cut per block of the architecture, named by its
  output), or the `cuts` given;
- `head_layers`, `head_units` (only when `head_layers` > 0), `dropout`,
  `learning_rate`: the head and its rate;
- `unfreeze`: weighted layers to fine-tune, counted down from the cut (the
  same meaning whatever the cut; capped at what the cut keeps when a trial
  runs), and `fine_tune_learning_rate` (only when `unfreeze` > 0).

The epochs a tuner grants (`search(epochs=...)`, or Hyperband's
`tuner/epochs`) are shared by both phases, which are one training session to
the callbacks passed to `search` (each sees `on_train_begin` and
`on_train_end` once a trial, TensorBoard's hparams callback included). While
the cut is frozen the head trains on the cut's features from a
`FeatureCache`, kept under the tuner's project directory. The weights
KerasTuner checkpoints are the full model's, so `tuner.get_best_models()`
predicts on raw inputs. To retrain a winner, `model = hypermodel.build(hp)`
then `hypermodel.fit(hp, model, x, y, ...)`: both phases, as in its trial.

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
import pathlib
import warnings
from collections.abc import Sequence

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf
from keras_tuner.src.engine.tuner_utils import TunerCallback

from keras_team import heads
from keras_team.caching import FrozenSplit, split_frozen
from keras_team.cuts import CutPoint, cut_points, same_weights
from keras_team.errors import KerasTeamError
from keras_team.freezing import unfreeze, units
from keras_team.heads import LOSS
from keras_team.transferability import CutScore, rank_cuts
from keras_team.transfers import transfer
from keras_team.tuning.feature_cache import FeatureCache

CACHE_DIRECTORY = "feature_cache"
"""The feature cache's folder inside a tuner's project directory."""

BOUNDARY_CACHE_BYTES = 2**30
"""Most bytes of fine-tune boundary features a hypermodel keeps in memory (least recently used dropped first)."""

VALIDATION_BATCH_BYTES = 64 * 2**20
"""Largest batch of float32 validation features a head-on-features fit evaluates at once."""


def searchable_cuts(leader: keras.Model, allowed: Sequence[str] | None = None) -> list[CutPoint]:
    """The cuts a search may choose: the leader's block view, or the cut points `allowed` names.

    Args:
        leader: the trained source model.
        allowed: these cut-point layer names, in leader order (None: the
            block view, `cut_points(leader, view="blocks")`, one name per
            set of kept weighted layers). Any cut that keeps a weighted
            layer, except the output, may be named.

    Example:
        >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
        >>> [c.name for c in searchable_cuts(leader, ["fc1", "conv1"])]
        ['conv1', 'fc1']
    """
    cuts = [c for c in cut_points(leader)[:-1] if c.depth >= 1]
    if not cuts:
        raise KerasTeamError(
            "leader", leader.name, "a model with a cut point that keeps a weighted layer, before its output"
        )
    if allowed is None:
        blocks = [c for c in cut_points(leader, view="blocks") if c.depth >= 1]
        return [group[-1] for group in same_weights(blocks)]  # cuts keeping the same weights are one choice
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


def _top_cuts(leader: keras.Model, cuts: list[CutPoint], k: int, data) -> tuple[list[CutPoint], list[CutScore]]:
    """The `k` of `cuts` that `rank_cuts` scores best on `data` (in leader order), and the whole ranking."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise KerasTeamError("top_k_cuts", k, "an int >= 1, or None to search every cut")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise KerasTeamError("rank_data", type(data).__name__,
                             "(x, y): the target's training and validation examples to rank the cuts on")
    ranking = rank_cuts(leader, *data, cuts=cuts)
    kept = {score.cut.name for score in ranking[:k]}
    return [c for c in cuts if c.name in kept], ranking


def _choices(field: str, values: Sequence) -> list:
    values = list(values)
    if not values:
        raise KerasTeamError(field, values, "a non-empty list of values (the search space is empty)")
    return values


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


class _OneSession(keras.callbacks.Callback):
    """A trial's phases as one training session to the callbacks passed to `fit`.

    Each callback sees the full model (also while the head trains alone on
    cached features: KerasTuner's checkpoint saves the full model's weights),
    every epoch of both phases in order, and `on_train_begin`/`on_train_end`
    once: a callback that cannot be reused for a second `fit` (TensorBoard's
    hparams callback) works, and EarlyStopping's patience spans the phases.
    A callback that stops training ends the trial.
    """

    def __init__(self, callbacks: Sequence[keras.callbacks.Callback], full_model: keras.Model):
        super().__init__()
        self.full_model = full_model
        self.inner = keras.callbacks.CallbackList(list(callbacks), model=full_model)
        self.started = False
        self.stopped = False
        self.last_logs = None

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def on_train_begin(self, logs=None):
        if not self.started:
            self.started = True
            self.inner.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.last_logs = logs  # forwarded once, by `end`, after the last phase

    def end(self) -> None:
        """The session's `on_train_end`, after its last phase."""
        self.inner.on_train_end(self.last_logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)
        if getattr(self.full_model, "stop_training", False):
            self.stopped = self.model.stop_training = True

    def on_train_batch_begin(self, batch, logs=None):
        self.inner.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.inner.on_train_batch_end(batch, logs)

    def on_test_begin(self, logs=None):
        self.inner.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.inner.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.inner.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.inner.on_test_batch_end(batch, logs)


def _joined(histories: list[keras.callbacks.History]) -> keras.callbacks.History:
    joined = keras.callbacks.History()
    joined.epoch = [epoch for history in histories for epoch in history.epoch]
    for history in histories:
        for key, values in history.history.items():
            joined.history.setdefault(key, []).extend(values)
    return joined


def _warn_on_plain_fit(model: keras.Model, settings: dict) -> None:
    """Make `model.fit` warn that it trains the head only, where the trial's recipe also fine-tunes."""
    plain_fit = model.fit

    def fit(*args, **kwargs):
        warnings.warn(
            f"{model.name}: model.fit trains the new head only, but this recipe then fine-tunes the top "
            f"{settings['unfreeze']} kept layers at {settings['fine_tune_learning_rate']:g}: retrain it with "
            "hypermodel.fit(hp, model, x, y, ...) to run both phases, as the trial did",
            UserWarning, stacklevel=2,
        )
        return plain_fit(*args, **kwargs)

    model.fit = fit


def _trial_of(callbacks) -> tuple:
    """The tuner and trial that run a `fit` (KerasTuner passes its `TunerCallback`), else (None, None)."""
    for callback in callbacks:
        if isinstance(callback, TunerCallback):
            return callback.tuner, callback.trial
    return None, None


def describe(settings: dict) -> str:
    """A trial's settings in one line, by the recipe's names.

    Example:
        >>> describe({"cut": "fc1", "head_layers": 1, "head_units": 32, "dropout": 0.0, "learning_rate": 0.01,
        ...           "unfreeze": 2, "fine_tune_learning_rate": 1e-4})
        'cut=fc1 head=1x32 dropout=0 learning_rate=0.01 unfreeze=2 fine_tune_learning_rate=0.0001'
    """
    head = f"{settings['head_layers']}x{settings['head_units']}" if settings["head_layers"] else "linear"
    fine_tune = settings["fine_tune_learning_rate"]
    return (f"cut={settings['cut']} head={head} dropout={settings['dropout']:g} "
            f"learning_rate={settings['learning_rate']:g} unfreeze={settings['unfreeze']} "
            f"fine_tune_learning_rate={f'{fine_tune:g}' if fine_tune else '-'}")


class TransferHyperModel(kt.HyperModel):
    """Searches the cut, the head and the two-phase fine-tune of a transfer.

    Every list below is the set of values a `hp.Choice` offers (GridSearch
    enumerates them; a list of one value fixes it).

    Args:
        leader: the trained source model (copied per trial, never changed).
        num_classes: classes of the target task.
        cuts: restrict the cut to these layer names (default: the block
            view, one per block of the architecture).
        top_k_cuts: keep only the `top_k_cuts` of those cuts that
            `keras_team.rank_cuts` scores best on `rank_data` (None: all).
        rank_data: `(x, y)`, the target's training and validation examples
            (never its test split) to rank the cuts on; needed with
            `top_k_cuts`.
        head_layers: numbers of hidden Dense layers in the head (0 = linear).
        head_units: widths of those hidden layers.
        dropout: dropout rates of the head.
        learning_rate: learning rates of the head phase.
        max_unfreeze: most kept weighted layers to fine-tune: `unfreeze` is
            `0..max_unfreeze`, capped at the layers a trial's cut keeps.
        fine_tune_learning_rate: learning rates of the fine-tuning phase.
        fine_tune_fraction: share of a trial's epochs spent fine-tuning when
            it unfreezes anything (the head phase keeps at least one epoch).
        metrics: compiled metrics; the objective must be one of them, or a
            loss, with or without the `val_` prefix.
        cache: a `FeatureCache`, True (one under the tuner's project
            directory, `<directory>/<project_name>/feature_cache`, in memory
            outside a search) or False (the head phase runs the full model).
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
        top_k_cuts: int | None = None,
        rank_data: tuple | None = None,
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
        candidates = self.cuts
        self.head_layers = _choices("head_layers", head_layers)
        self.head_units = _choices("head_units", head_units)
        self.dropout = _choices("dropout", dropout)
        self.learning_rate = _choices("learning_rate", learning_rate)
        self.fine_tune_learning_rate = _choices("fine_tune_learning_rate", fine_tune_learning_rate)
        deepest = max(c.depth for c in candidates)
        if isinstance(max_unfreeze, bool) or not isinstance(max_unfreeze, int) or not 0 <= max_unfreeze <= deepest:
            raise KerasTeamError(
                "max_unfreeze", max_unfreeze,
                f"an int from 0 to {deepest} (the weighted layers the deepest allowed cut keeps)",
            )
        self.cut_ranking: list[CutScore] | None = None  # with top_k_cuts: every candidate's score, best first
        if top_k_cuts is not None:
            self.cuts, self.cut_ranking = _top_cuts(leader, candidates, top_k_cuts, rank_data)
        elif rank_data is not None:
            raise KerasTeamError("rank_data", "given", "None unless top_k_cuts is set (it ranks the cuts to keep)")
        self.max_unfreeze = max_unfreeze
        if not 0 < fine_tune_fraction < 1:
            raise KerasTeamError("fine_tune_fraction", fine_tune_fraction, "a number strictly between 0 and 1")
        self.fine_tune_fraction = fine_tune_fraction
        self.metrics = list(metrics)
        self.cache = FeatureCache() if cache is True else (cache or None)
        # The fine-tune phase's frozen part below the unfrozen blocks, by its weights, boundary and data.
        self.boundaries = None if self.cache is None else FeatureCache(dtype=self.cache.dtype,
                                                                       max_bytes=BOUNDARY_CACHE_BYTES)
        self._stores: dict[pathlib.Path, FeatureCache] = {}  # a search's cache, by tuner project directory
        self.seed = seed
        self.run_eagerly = run_eagerly
        self.last_cache = "off"  # "hit", "miss" or "off": the last trial's feature lookups
        self._said_cache_off: set[str] = set()
        self._trainers: dict[tuple, _HeadTrainer] = {}  # compiled heads on cached features, by shape and structure
        space = kt.HyperParameters()
        self.declare_hyperparameters(space)
        self._names = [h.name for h in space.space]

    # --- the search space ------------------------------------------------
    def reported_metrics(self) -> list[str]:
        """Names an objective may take: the loss and metrics, with and without `val_`.

        Example:
            >>> TransferHyperModel(keras_team.zoo.seed_cnn((8, 8, 1), 5), 5).reported_metrics()
            ['loss', 'accuracy', 'val_loss', 'val_accuracy']
        """
        names = ["loss", *[m if isinstance(m, str) else m.name for m in self.metrics]]
        return names + [f"val_{name}" for name in names]

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        """Declare the search space on `hp` (KerasTuner's hook, called once by a tuner's constructor).

        Example:
            >>> hm = TransferHyperModel(keras_team.zoo.seed_cnn((8, 8, 1), 5), 5)
            >>> hp = kt.HyperParameters(); hm.declare_hyperparameters(hp)
            >>> [h.name for h in hp.space]
            ['cut', 'head_layers', 'head_units', 'dropout', 'learning_rate', 'unfreeze', 'fine_tune_learning_rate']
        """
        hp.Choice("cut", [c.name for c in self.cuts])
        hp.Choice("head_layers", self.head_layers)
        deep = [n for n in self.head_layers if n > 0]
        if deep:
            with hp.conditional_scope("head_layers", deep):
                hp.Choice("head_units", self.head_units)
        hp.Choice("dropout", self.dropout)
        hp.Choice("learning_rate", self.learning_rate)
        if self.max_unfreeze:
            hp.Int("unfreeze", 0, self.max_unfreeze)
            with hp.conditional_scope("unfreeze", list(range(1, self.max_unfreeze + 1))):
                hp.Choice("fine_tune_learning_rate", self.fine_tune_learning_rate)

    def settings(self, hp: kt.HyperParameters) -> dict:
        """A trial's settings from `hp`, by the recipe's names; `unfreeze` capped at what the cut keeps.

        Reads `hp` without opening conditional scopes when the space is
        declared on it (a trial's, or the tuner's own), so KerasTuner sees
        nothing left to activate after one build; declares it first on a bare
        `HyperParameters` (its defaults).

        Example:
            >>> hm = TransferHyperModel(keras_team.zoo.seed_cnn((8, 8, 1), 5), 5, cuts=["conv1", "fc1"])
            >>> hm.settings(kt.HyperParameters())["cut"]
            'conv1'
        """
        declared = {h.name: h for h in hp.space}
        if any(name not in declared for name in self._names):
            self.declare_hyperparameters(hp)
            declared = {h.name: h for h in hp.space}

        def value(name):
            if name not in declared or not hp.is_active(name):
                return None
            return hp.values.get(name, declared[name].default)

        depth = {c.name: c.depth for c in self.cuts}[value("cut")]
        top = min(value("unfreeze") or 0, depth)
        layers = value("head_layers")
        return {
            "cut": value("cut"),
            "head_layers": layers,
            "head_units": value("head_units") if layers else None,
            "dropout": value("dropout"),
            "learning_rate": value("learning_rate"),
            "unfreeze": top,
            "fine_tune_learning_rate": value("fine_tune_learning_rate") if top else None,
        }

    def chosen(self, values: dict) -> dict:
        """A trial's settings from its hyperparameter values (e.g. `trial.hyperparameters.values`).

        Example:
            >>> hm = TransferHyperModel(keras_team.zoo.seed_cnn((8, 8, 1), 5), 5, cuts=["conv1", "fc1"])
            >>> hm.chosen({"cut": "fc1", "head_layers": 0, "unfreeze": 2})["unfreeze"]
            2
            >>> hm.chosen({"cut": "conv1", "head_layers": 0, "unfreeze": 2})["unfreeze"]  # conv1 keeps one
            1
        """
        hp = kt.HyperParameters()
        self.declare_hyperparameters(hp)
        hp.values.update(values)
        return self.settings(hp)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """The leader cut at `hp`'s cut (copied, frozen) plus a new dense head, compiled for the head phase.

        The model's own `fit` trains the head only (and warns where the recipe
        also fine-tunes); `hypermodel.fit(hp, model, ...)` runs both phases.
        """
        settings = self.settings(hp)
        # Seeded by its initializers: KerasTuner builds more than once per trial, and the
        # global random state (the user's, the oracle's) is not ours to reset.
        head = heads.dense(
            self.num_classes,
            hidden=(settings["head_units"],) * settings["head_layers"],
            dropout=settings["dropout"],
            seed=self.seed,
        )
        model = transfer(self.leader, settings["cut"], head, name=f"{self.name}_{settings['cut']}")
        model.compile(keras.optimizers.Adam(settings["learning_rate"]), LOSS, metrics=self.metrics,
                      run_eagerly=self.run_eagerly)
        if settings["unfreeze"]:
            _warn_on_plain_fit(model, settings)
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
        """Head on the frozen cut, then the top `unfreeze` kept layers at the fine-tune rate.

        `epochs`/`initial_epoch` (Hyperband sets them per round) bound both
        phases together; `callbacks` see both as one session. Returns one
        `History` over both phases. In a search, a trial that fails says so
        in one line before KerasTuner records it as failed.
        """
        settings = self.settings(hp)
        tuner, trial = _trial_of(callbacks)
        try:
            return self._two_phases(settings, tuner, model, x, y, validation_data, epochs, initial_epoch,
                                    dict(batch_size=batch_size, verbose=verbose, **kwargs), callbacks)
        except Exception as error:  # reported, then raised again: KerasTuner records the trial as failed
            if trial is not None:
                print(f"[{tuner.tuner_id}] trial {trial.trial_id} FAILED: {describe(settings)}: "
                      f"{type(error).__name__}: {error}", flush=True)
            raise

    def _two_phases(self, settings, tuner, model, x, y, validation_data, epochs, initial_epoch, common, callbacks):
        split = epoch_split(initial_epoch, epochs, settings["unfreeze"], self.fine_tune_fraction)
        session = _OneSession(callbacks, model)
        common = {**common, "callbacks": [session]}
        plain_fit = type(model).fit  # the recipe's own fits: no warning about skipping a phase
        histories = []
        self.last_cache = "off"
        model.stop_training = False
        cacheable = self._cacheable(x, y, validation_data)
        if split > initial_epoch:
            if cacheable:
                histories.append(self._fit_head_on_features(
                    self._store(tuner), model, settings["learning_rate"], x, y, validation_data,
                    initial_epoch, split, common))
            else:
                histories.append(plain_fit(model, x, y, validation_data=validation_data, epochs=split,
                                           initial_epoch=initial_epoch, **common))
        if epochs > split and not session.stopped:
            unfreeze(model, top=settings["unfreeze"])
            rate = settings["fine_tune_learning_rate"]
            frozen = split_frozen(model) if cacheable and model.inference_mode else None
            if frozen is not None:
                histories.append(self._fine_tune_above_boundary(frozen, rate, x, y, validation_data,
                                                                split, epochs, common))
            else:
                model.compile(keras.optimizers.Adam(rate), LOSS, metrics=self.metrics, run_eagerly=self.run_eagerly)
                histories.append(plain_fit(model, x, y, validation_data=validation_data, epochs=epochs,
                                           initial_epoch=split, **common))
        session.end()
        return _joined(histories)

    def _store(self, tuner: kt.Tuner | None) -> FeatureCache:
        """The cache of this search: the given one if it has a directory, else one in the tuner's project."""
        if self.cache.directory is not None or tuner is None:
            return self.cache
        directory = pathlib.Path(tuner.project_dir) / CACHE_DIRECTORY
        if directory not in self._stores:
            self._stores[directory] = FeatureCache(directory, dtype=self.cache.dtype)
        return self._stores[directory]

    def _cacheable(self, x, y, validation_data) -> bool:
        if self.cache is None:
            return False
        reason = None
        if not hasattr(x, "__array__") or y is None:
            reason = (f"the training data is a {type(x).__name__}, not arrays (augmented or streamed), so every "
                      "epoch runs the frozen kept layers")
        elif validation_data is None:
            reason = ("no validation_data arrays (validation_split, or no validation): every epoch runs the frozen "
                      "kept layers; pass validation_data=(x_val, y_val) to use it")
        elif not isinstance(validation_data, (tuple, list)) or not hasattr(validation_data[0], "__array__"):
            reason = (f"validation_data is a {type(validation_data).__name__}, not (x_val, y_val) arrays, so every "
                      "epoch runs the frozen kept layers")
        if reason and reason not in self._said_cache_off:
            print(f"feature cache: OFF for this search: {reason}", flush=True)
            self._said_cache_off.add(reason)
        return reason is None

    def _fit_head_on_features(self, store, model, learning_rate, x, y, validation_data, initial_epoch, split, common):
        body, head = model.body, model.head
        hits = store.hits
        verbose = 1 if common.get("verbose", "auto") == "auto" else common["verbose"]
        features, val_features = store.features_of(body, [x, validation_data[0]], verbose=verbose)
        self.last_cache = "hit" if store.hits == hits + 2 else "miss"
        return self._fit_on_features(head, learning_rate, features, y, val_features, validation_data,
                                     initial_epoch, split, common)

    def _fit_on_features(self, part, learning_rate, features, y, val_features, validation_data, initial_epoch,
                         epochs, common):
        """Train `part` (the head, or the part above the freeze boundary) on cached `features`, in a `_HeadTrainer`."""
        common = dict(common)
        batch_size, shuffle = common.pop("batch_size"), common.pop("shuffle", True)
        weights = common.pop("sample_weight", None)
        train, steps = _batches((features, y) if weights is None else (features, y, weights), batch_size,
                                shuffle=shuffle, seed=self.seed, repeat=True)
        validation = _validation_batches((val_features, *validation_data[1:]), batch_size)
        trainer = self._head_trainer(part, features.shape[1:], steps)
        trainer.start(part, learning_rate)
        return trainer.model.fit(
            train, steps_per_epoch=steps, validation_data=validation,
            epochs=epochs, initial_epoch=initial_epoch, shuffle=False,
            **{**common, "callbacks": [_CopyWeights(trainer.head, part), *common["callbacks"]]},
        )

    def _fine_tune_above_boundary(self, frozen: FrozenSplit, learning_rate, x, y, validation_data, split, epochs,
                                  common):
        """The fine-tune phase on the frozen part's output: only the unfrozen blocks and the head run each step.

        The part below the freeze boundary (`keras_team.caching.split_frozen`)
        is frozen and in inference mode, so its output on the trial's data is
        computed once and kept in `self.boundaries` (in memory, shared by the
        trials with the same cut and unfreeze depth); `frozen.top` holds the
        trial model's own layers, so training it fine-tunes the model.
        """
        verbose = 1 if common.get("verbose", "auto") == "auto" else common["verbose"]
        features, val_features = self.boundaries.features_of(frozen.bottom, [x, validation_data[0]],
                                                              verbose=verbose)
        return self._fit_on_features(frozen.top, learning_rate, features, y, val_features, validation_data,
                                     split, epochs, common)

    def _head_trainer(self, head: keras.Model, shape: tuple, steps: int) -> _HeadTrainer:
        """The compiled model on features of `shape` for parts like `head` (layers, trainable flags), made once a search."""
        layers = [(type(layer).__name__, {k: v for k, v in layer.get_config().items() if k != "name"})
                  for layer in units(head)]  # nested models opened: their own configs name their inputs afresh
        key = (tuple(shape), steps, repr(layers))
        if key not in self._trainers:
            self._trainers[key] = _HeadTrainer(head, shape, self.metrics, steps, self.run_eagerly)
        return self._trainers[key]


class _HeadTrainer:
    """A head, or the part above the freeze boundary, trained on cached features: compiled (and traced) once for
    every trial whose part has its structure.

    A trial's own part is copied in (`start`: weights, dropout seed state, a
    fresh optimizer state at the trial's rate), so training it here is
    training that part from where its trial left it; `_CopyWeights` copies
    the result back after every epoch. Each fit runs a whole epoch per
    execution (`steps_per_execution`): per-step dispatch was most of a
    head's time.
    """

    def __init__(self, head: keras.Model, shape: tuple, metrics: list, steps: int, run_eagerly: bool):
        self.head = keras.models.clone_model(head)
        inputs = keras.Input(shape, name="features")
        self.model = keras.Model(inputs, self.head(inputs), name="head_on_features")
        self.model.compile(keras.optimizers.Adam(), LOSS, metrics=metrics, run_eagerly=run_eagerly,
                           steps_per_execution=steps)
        self.model.optimizer.build(self.model.trainable_variables)

    def start(self, head: keras.Model, learning_rate: float) -> None:
        """Set this trainer to `head`'s weights and a new optimizer at `learning_rate`."""
        _copy(head, self.head)
        optimizer = self.model.optimizer
        for variable in optimizer.variables:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
        optimizer.learning_rate.assign(learning_rate)


def _copy(source: keras.Model, target: keras.Model) -> None:
    for into, value in zip(target.variables, source.variables, strict=True):
        into.assign(value)


class _CopyWeights(keras.callbacks.Callback):
    """After every epoch, copy the trained head into the trial's own (callbacks after it see the full model)."""

    def __init__(self, source: keras.Model, target: keras.Model):
        super().__init__()
        self.source, self.target = source, target

    def on_epoch_end(self, epoch, logs=None):
        _copy(self.source, self.target)


def _validation_batches(arrays: tuple, batch_size: int) -> tf.data.Dataset:
    """Validation features (cast to float32) with their labels, in one batch when it fits `VALIDATION_BATCH_BYTES`.

    Validation runs every epoch; one batch made once costs Keras a fraction
    of a batched pipeline's per-epoch iterator and steps, and gives the same
    example-weighted loss and metrics. Larger sets go in batches of that size
    (at least `batch_size`). Never repeated: an evaluation runs
    `steps_per_execution` (an epoch of training) steps unless the data ends.

    Example:
        >>> [len(b[1]) for b in _validation_batches((np.zeros((5, 3), "float16"), np.arange(5)), 2)]
        [5]
    """
    features = arrays[0]
    size = max(batch_size, VALIDATION_BATCH_BYTES // max(1, 4 * math.prod(features.shape[1:])))
    if len(features) > size:
        return _batches(arrays, size, shuffle=False)[0]
    return _unrewritten(tf.data.Dataset.from_tensors((tf.cast(np.asarray(features), "float32"),
                                                      *(tf.convert_to_tensor(np.asarray(a)) for a in arrays[1:]))))


def _batches(arrays: tuple, batch_size: int, *, shuffle: bool, seed: int | None = None,
             repeat: bool = False) -> tuple[tf.data.Dataset, int]:
    """Batches of cached features (cast to float32) with their labels, and the batches of one pass.

    Each pass over the examples is one epoch (reshuffled when `shuffle`),
    its last batch short, as Keras' array input makes them. Indices are
    shuffled and the examples gathered in the pipeline (Keras' eager
    per-epoch shuffle of arrays cost more than the head's steps). With
    `repeat` the passes never end, so `fit` given `steps_per_epoch` keeps one
    iterator for all epochs instead of making one per epoch.

    Example:
        >>> batches, steps = _batches((np.arange(5), np.arange(5)), 2, shuffle=False, repeat=True)
        >>> steps, [b[1].numpy().tolist() for b in batches.take(4)]
        (3, [[0, 1], [2, 3], [4], [0, 1]])
    """
    tensors = tuple(tf.convert_to_tensor(np.asarray(a)) for a in arrays)
    count = len(arrays[0])
    index = tf.data.Dataset.range(count)
    if shuffle:
        index = index.shuffle(count, seed=seed, reshuffle_each_iteration=True)

    def gather(i):
        batch = [tf.gather(t, i) for t in tensors]
        return (tf.cast(batch[0], "float32"), *batch[1:])

    batches = index.batch(batch_size)
    if repeat:
        batches = batches.repeat()
    return _unrewritten(batches.map(gather).prefetch(tf.data.AUTOTUNE)), math.ceil(count / batch_size)


def _unrewritten(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` without tf.data's default graph rewrites.

    A rewrite serialises the pipeline's graph, the features it captures
    included (tens of MB), each time Keras makes an iterator; these
    pipelines have nothing to gain from it.
    """
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)
