"""Linear probes: a linear head on frozen features, its L2 strength and its epochs chosen on validation.

A regularised logistic regression, trained with Keras: for each L2 strength
of a grid, the head starts from the same initial weights and batches and is
fitted with `model.fit` (the L2 penalty on the Dense kernels, its strength a
variable, so one compiled model serves the whole grid) and
`keras.callbacks.EarlyStopping` on the validation log-loss, keeping its best
epoch; on several workers, the chief alone fits and every worker receives
its weights and figures (`keras_team.distribute.fit_on_chief`). The strength whose best epoch has the lowest validation log-loss
(the mean cross-entropy, without the penalty) wins; its weights and its
regularizer are left in the model. Nothing is chosen on test data.

Features that are frozen are computed once (`features_of`, or a follower's
cached taps in `probe_follower`, augmented copies of the training split
included): fitting a probe costs no passes of the leader.

Example (a linear probe on a leader's cut at `fc1`; `keras_team.heads.dense(n)` is Flatten + the logits layer):
    $ python -c "import keras_team as kt; from keras_team.probe import *; body = kt.body(leader, 'fc1', share=True);
                 fit = fit_probe(kt.heads.dense(5), (features_of(body, x), y), (features_of(body, xv), yv))"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_team import distribute
from keras_team.backend import is_tensorflow
from keras_team.errors import KerasTeamError
from keras_team.heads import LOSS, adapt

if TYPE_CHECKING:  # caching imports the team; the probe stands without it
    from keras_team.caching import TapCache

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
"""The L2 strengths a probe tries by default (penalty ``l2 * sum(kernel**2)`` per batch, as `keras.regularizers.L2`)."""
PATIENCE = 10
"""Epochs without a lower validation log-loss before a probe's fit stops."""
STEPS_PER_EPOCH = 10
"""The fewest batches of a probe's epoch: a few-shot training split is one batch, too few steps to converge in `epochs`."""
VALIDATION_BATCH = 1024
STATISTICS = ("auto", "train", "train+validation")
"""Whose features set a probe's `keras_team.heads.Standardize` layers (inputs only, never labels); see `statistics_for`."""


def statistics_for(labels) -> str:
    """The features a probe's standardization should see, from its training labels: ``"auto"``'s choice.

    ``"train+validation"`` when the training split has fewer than two examples
    per class (one shot: its spread is the classes' differences alone, with
    no variation within a class to scale by), else ``"train"``. Chosen on
    validation: at one shot the validation inputs raised the default team's
    validation accuracy on digits and photo patches (not on those patches as
    28x28 grey images); at 5 and 20 shots they lowered it on the patches
    (benchmarks/README.md, issue 23).

    Example:
        >>> statistics_for([0, 1, 2]), statistics_for([0, 0, 1, 1, 2, 2])
        ('train+validation', 'train')
    """
    labels = np.asarray(labels).reshape(-1)
    return "train+validation" if len(labels) < 2 * len(np.unique(labels)) else "train"


class Score(NamedTuple):
    """One L2 strength's best epoch on validation: its log-loss, its accuracy and the epoch (from 1)."""

    loss: float
    accuracy: float
    epoch: int


class ProbeFit(NamedTuple):
    """The chosen L2 strength, its `Score`, every strength's `Score` (keyed by strength, in grid order), `statistics`."""

    l2: float
    score: Score
    scores: dict[float, Score]
    statistics: str = "train"

    def figures(self) -> dict[str, Any]:
        """What a report records, flat: the chosen fit's validation figures, strength and epoch, every strength's log-loss.

        Example:
            >>> ProbeFit(0.01, Score(0.5, 0.9, 7), {0.01: Score(0.5, 0.9, 7)}, "train").figures()
            {'val_accuracy': 0.9, 'val_loss': 0.5, 'l2': 0.01, 'best_epoch': 7, 'l2_val_loss': [[0.01, 0.5]],
             'statistics': 'train'}
        """
        return {"val_accuracy": self.score.accuracy, "val_loss": self.score.loss, "l2": self.l2,
                "best_epoch": self.score.epoch,
                "l2_val_loss": [[strength, score.loss] for strength, score in self.scores.items()],
                "statistics": self.statistics}


def set_l2(model: keras.Layer, l2: float) -> None:
    """Give every Dense kernel of `model` the penalty ``l2 * sum(kernel**2)`` (0: none); recompile before fitting.

    Example:
        >>> head = keras_team.heads.dense(3)
        >>> head.build((None, 4))
        >>> set_l2(head, 0.1)
        >>> head.get_layer("logits").get_config()["kernel_regularizer"]["config"]
        {'l2': 0.1}
    """
    regularizer = keras.regularizers.L2(l2) if l2 else None
    for layer in _dense_layers(model):
        layer.kernel_regularizer = regularizer  # what its config (and a saved model) says
        if layer.built:
            layer.kernel.regularizer = regularizer  # what training adds to the loss


class _Penalty(keras.regularizers.Regularizer):
    """`keras.regularizers.L2`'s ``l2 * sum(x**2)`` with ``l2`` a variable: a step traced once serves every strength."""

    def __init__(self, strength: keras.Variable):
        self.strength = strength

    def __call__(self, x):
        return keras.ops.cast(self.strength, x.dtype) * keras.ops.sum(keras.ops.square(x))


def _dense_layers(layer: keras.Layer):
    if isinstance(layer, keras.layers.Dense):
        yield layer
    for inner in getattr(layer, "layers", ()):  # a model's layers, nested models included
        yield from _dense_layers(inner)


def features_of(body: keras.Model, x, *, batch_size: int = 256) -> np.ndarray:
    """The frozen `body`'s outputs on `x`, once, in inference mode.

    `x`: an array, a dict of arrays keyed by the body's inputs, or a
    `tf.data.Dataset` of input batches (a streamed task's,
    `keras_team.data.examples`). `body` is called batch by batch, as
    `keras_team.caching.cache_features` calls a frozen part: `predict`
    would trace a graph for each new body and example count, more than a
    few-shot split's forward costs.

    Example:
        >>> features_of(keras.Sequential([keras.Input((3, 3)), keras.layers.Flatten()]), np.ones((2, 3, 3))).shape
        (2, 9)
    """
    batches = x if isinstance(x, tf.data.Dataset) else tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
    return np.concatenate([keras.ops.convert_to_numpy(body(batch, training=False)) for batch in batches])


def _check_grid(l2: Sequence[float]) -> tuple[float, ...]:
    grid = tuple(l2) if isinstance(l2, (list, tuple)) else ()
    if not grid or any(not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 <= s < math.inf for s in grid):
        raise KerasTeamError("l2", l2, "a non-empty list of finite numbers >= 0")
    return tuple(float(s) for s in grid)


def fit_probe(
    model: keras.Model,
    train: tuple[Any, Any],
    validation: tuple[Any, Any],
    *,
    l2: Sequence[float] = L2_GRID,
    epochs: int = 100,
    learning_rate: float = 0.03,
    patience: int = PATIENCE,
    batch_size: int = 32,
    seed: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = 0,
    statistics: str = "auto",
) -> ProbeFit:
    """Fit `model` once per L2 strength from the same start; keep the strength best on validation.

    Args:
        model: a built model with one output of logits whose Dense kernels
            take the penalty (e.g. `keras_team.heads.dense(n)`, a linear head).
        train: `(features, labels)` (features an array, or a dict of arrays
            keyed by the model's inputs).
        validation: the same for the validation split; it chooses the
            strength and each fit's stopping epoch.
        l2: the strengths to try.
        epochs: the most epochs of each fit.
        learning_rate: Adam's learning rate.
        patience: epochs without a lower validation log-loss before a fit stops.
        batch_size, callbacks, verbose: as for `model.fit` (the callbacks see every fit;
            on several workers, the chief's only: the chief alone fits, see
            `keras_team.distribute.fit_on_chief`).
        seed: of the training examples' shuffle (None: TensorFlow's global seed).
        statistics: whose features set the model's `Standardize` layers
            (`keras_team.heads.adapt`): ``"train"``, ``"train+validation"``
            (the validation inputs join, never their labels), or ``"auto"``
            (`statistics_for` the training labels: the validation inputs
            join at one shot).

    Returns:
        A `ProbeFit`; `model` holds the chosen fit's best weights and penalty.

    Example (it trains once per strength; `tests/test_probe.py` runs it):
        $ python -c "from keras_team import heads, probe; head = heads.dense(5); head.build((None, 120));
                     fit = probe.fit_probe(head, (features, y), (validation_features, yv)); print(fit.l2)"
    """
    grid = _check_grid(l2)
    if statistics not in STATISTICS:
        raise KerasTeamError("statistics", statistics, f"one of {', '.join(STATISTICS)}")
    if statistics == "auto":
        statistics = statistics_for(train[1])
    if len(model.outputs) != 1:
        raise KerasTeamError("model", model.name, f"a model with one output of logits (it has {len(model.outputs)})")
    options = dict(epochs=epochs, learning_rate=learning_rate, patience=patience, batch_size=batch_size, seed=seed,
                   callbacks=callbacks, verbose=verbose, statistics=statistics)
    if isinstance(distribute.strategy_of(model), tf.distribute.MultiWorkerMirroredStrategy):
        # A probe's step is a small matrix product: a collective round trip per step cost 8x one process's fit.
        fit = _from_json(distribute.fit_on_chief(
            model, lambda local: _to_json(fit_probe(local, train, validation, l2=grid, **options))))
        set_l2(model, fit.l2)
        return fit
    examples = len(np.asarray(train[1]))
    steps = max(math.ceil(examples / batch_size), STEPS_PER_EPOCH)
    # Under a mirrored strategy every replica needs an equal share of the first batch (Keras builds on it).
    held_out_batch = distribute.global_batch_size(VALIDATION_BATCH, len(np.asarray(validation[1])))
    held_out = tf.data.Dataset.from_tensor_slices(validation).batch(held_out_batch).cache()
    adapt(model, train[0], *([validation[0]] if statistics == "train+validation" else []))  # keras_team.heads.probe
    initial = model.get_weights()
    with distribute.strategy_of(model).scope():
        penalty = _Penalty(keras.Variable(0.0, trainable=False, name="l2"))
    for layer in _dense_layers(model):
        layer.kernel.regularizer = penalty
    optimizer_start = None
    best: tuple[float, Score, list] | None = None
    scores = {}
    for strength in grid:
        model.set_weights(initial)
        penalty.strength.assign(strength)
        if optimizer_start is not None and is_tensorflow():
            # One traced train and test step serve every strength: tracing costs more than a probe's epochs.
            for variable, value in zip(model.optimizer.variables, optimizer_start):
                variable.assign(value)
        else:  # other backends read the strength when they trace: a new trace per strength
            # The validation log-loss without the penalty: comparable across strengths.
            model.compile(keras.optimizers.Adam(learning_rate), LOSS,
                          metrics=[keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="log_loss"),
                                   keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                          # One call into TensorFlow per epoch; one step per call under a distribution strategy
                          # (Keras 3.15's multi-step loop fails there: "You must feed a value for placeholder").
                          steps_per_execution=1 if tf.distribute.has_strategy() else steps)
            with distribute.strategy_of(model).scope():
                model.optimizer.build(model.trainable_variables)  # as Keras' compile_from_config does
            optimizer_start = [keras.ops.convert_to_numpy(variable) for variable in model.optimizer.variables]
        # A new dataset per strength: each strength sees the same batches (a dataset's iterators shuffle anew);
        # tf.data, not arrays: Keras' array adapter costs ~0.1 s per epoch, more than a probe's whole step.
        batches = tf.data.Dataset.from_tensor_slices(train).shuffle(examples, seed=seed).repeat().batch(batch_size)
        # Every worker of a cluster stops at the same epoch and restores the same best weights.
        stop = keras.callbacks.EarlyStopping("val_log_loss", patience=patience, restore_best_weights=True)
        history = distribute.fit(model, batches, steps_per_epoch=steps, validation_data=held_out, epochs=epochs,
                                 callbacks=callbacks, worker_callbacks=[stop], verbose=verbose).history
        epoch = int(np.argmin(history["val_log_loss"]))  # the restored weights' epoch
        scores[strength] = Score(float(history["val_log_loss"][epoch]), float(history["val_accuracy"][epoch]),
                                 epoch + 1)
        if best is None or scores[strength].loss < best[1].loss:
            best = (strength, scores[strength], model.get_weights())
    strength, score, weights = best
    model.set_weights(weights)
    penalty.strength.assign(strength)  # what the traced step adds if the model is fitted again uncompiled
    set_l2(model, strength)
    return ProbeFit(strength, score, scores, statistics)


def _to_json(fit: ProbeFit) -> dict:
    return {"l2": fit.l2, "scores": [[strength, *score] for strength, score in fit.scores.items()],
            "statistics": fit.statistics}


def _from_json(sent: dict) -> ProbeFit:
    scores = {strength: Score(loss, accuracy, epoch) for strength, loss, accuracy, epoch in sent["scores"]}
    return ProbeFit(sent["l2"], scores[sent["l2"]], scores, sent["statistics"])


def probe_follower(team, name: str, train: tf.data.Dataset | TapCache, validation: tf.data.Dataset | TapCache, *,
                   augmented: tf.data.Dataset | None = None, copies: int = 0, **kwargs: Any) -> ProbeFit:
    """`fit_probe` for follower `name` of `team` on its taps, each leader run once over each split.

    The follower's model should be linear (e.g. `keras_team.heads.dense(n)`,
    read through `Follower(..., combine="concat")`); its weights in the team
    are the chosen fit's.

    Args:
        team: a `keras_team.Team`.
        name: the follower's name.
        train, validation: batched `(x, y)` of raw inputs, or their taps
            already cached (`keras_team.caching.TapCache`, e.g. one
            `cache_taps` of several followers).
        augmented: an augmenting dataset of the training split (e.g. a
            task's `dataset("train", training=True)` with `augment`): the
            taps of `copies` passes over it join the training examples'
            (cached once; the validation split is never augmented).
        copies: how many augmented copies of the training split to add.
        **kwargs: as for `fit_probe` (`l2`, `epochs`, `learning_rate`, ...);
            ``statistics="auto"`` counts the training split's examples
            without the augmented copies.

    Example (it trains once per strength; `tests/test_probe.py` runs it):
        $ python -c "from keras_team import Follower, Team, heads, probe; team = Team(leader, [Follower(heads.dense(5), name='probe')]);
                     print(probe.probe_follower(team, 'probe', task.dataset('train'), task.dataset('validation')).l2)"
    """
    from keras_team.caching import cache_taps, follower_taps  # caching imports the team; the probe stands without it

    if not isinstance(copies, int) or copies < 0 or (copies and augmented is None):
        raise KerasTeamError("copies", copies, "an int >= 0, and augmented (an augmenting dataset) when it is > 0")
    train_inputs, train_labels = follower_taps(team, name, train, verbose=0)
    if kwargs.get("statistics", "auto") == "auto":  # shifted copies of one shot are still one shot
        kwargs["statistics"] = statistics_for(train_labels)
    if copies:
        extra_inputs, extra_labels = cache_taps(team, name, augmented, views=copies, verbose=0)
        train_inputs = {key: np.concatenate([value, extra_inputs[key]]) for key, value in train_inputs.items()}
        train_labels = np.concatenate([train_labels, extra_labels])
    validation_taps = follower_taps(team, name, validation, verbose=0)
    return fit_probe(team.follower_graphs[name], (train_inputs, train_labels), tuple(validation_taps), **kwargs)
