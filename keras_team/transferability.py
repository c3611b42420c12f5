"""How well each cut of a leader suits a target task, scored in seconds before any training.

The score of a cut is the leave-one-out accuracy of a nearest-class-mean
classifier on the target's L2-normalised features at that cut (the NCM
classifier of Mensink et al., TPAMI 2013; by cosine, as the imprinted head of
`keras_team.heads.cosine` starts): each example is classified by the class
means of all the other examples. Nothing is trained, so the score reads what
the features hold, not what an optimiser made of them. Give it the target's
training and validation examples, never its test split.

Example:
    >>> ranking = keras_team.rank_cuts(leader, np.concatenate([x, xv]), np.concatenate([y, yv]))
    >>> best = ranking[0]  # CutScore(cut, score, seconds)
    >>> best.cut.name in [c.name for c in keras_team.cut_points(leader)], best.score >= ranking[-1].score
    (True, True)
"""

from __future__ import annotations

import time
from typing import NamedTuple

import keras
import numpy as np

from keras_team.cuts import CutPoint, cut_points, resolve_cut
from keras_team.errors import KerasTeamError
from keras_team.transfers import body


class CutScore(NamedTuple):
    """One cut's transferability: the cut, its score (in [0, 1], higher is better) and the seconds it took."""

    cut: CutPoint
    score: float
    seconds: float


def leave_one_out_ncm_accuracy(features, labels) -> float:
    """Leave-one-out accuracy of the nearest class mean (cosine) on `features`.

    Each example is assigned the class whose mean of the *other* examples'
    L2-normalised features is nearest in angle; it counts as right only if
    its own class wins outright. Examples that are alone in their class have
    no mean to be compared with and are left out.

    Example:
        >>> features = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.2]])
        >>> leave_one_out_ncm_accuracy(features, np.array([0, 0, 1, 1, 1]))  # the last is nearer class 0
        0.8
    """
    labels = np.asarray(labels).reshape(-1)
    features = np.asarray(features, dtype="float64").reshape(len(labels), -1)
    features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    usable = counts[index] > 1
    if len(classes) < 2 or not usable.any():
        raise KerasTeamError("y", f"{len(labels)} labels of {len(classes)} classes",
                             "examples of at least 2 classes, and 2 or more of some class")
    sums = np.zeros((len(classes), features.shape[1]))
    np.add.at(sums, index, features)
    means = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    similarity = features @ means.T  # to every class mean, the example's own included
    own = sums[index] - features  # its class's sum without it
    own_norm = np.linalg.norm(own, axis=1)
    similarity[np.arange(len(labels)), index] = np.where(
        own_norm > 1e-12, np.einsum("nd,nd->n", features, own) / np.maximum(own_norm, 1e-12), -np.inf)
    mine = similarity[np.arange(len(labels)), index]
    similarity[np.arange(len(labels)), index] = -np.inf
    right = mine > similarity.max(axis=1)
    return float(right[usable].mean())


def rank_cuts(leader: keras.Model, x, y, *, cuts=None, batch_size: int = 128) -> list[CutScore]:
    """Every cut of `leader`, best first, by leave-one-out nearest-class-mean accuracy of its features on `x`.

    Args:
        leader: the trained source model (a built Sequential or functional model).
        x: the target task's examples, as the leader takes them (its
            training and validation splits; never the test split): an
            array, or a `tf.data.Dataset` of batches (a streamed task's,
            `keras_team.data.examples`), read once per cut.
        y: their class labels.
        cuts: the cuts to score (names, depths or `CutPoint`s); default every
            cut point of the leader, the input itself included.
        batch_size: batch size of the pass computing each cut's features (arrays only).

    Returns:
        `CutScore(cut, score, seconds)` per cut, highest score first (ties
        keep the leader's order); `seconds` is the cut's forward pass and
        score together.

    Example:
        >>> ranking = keras_team.rank_cuts(leader, x, y, cuts=["rescale", "pool1", "fc1"])  # rescale: the pixels
        >>> sorted(c.cut.name for c in ranking), all(0 <= c.score <= 1 and c.seconds > 0 for c in ranking)
        (['fc1', 'pool1', 'rescale'], True)
    """
    chosen = cut_points(leader) if cuts is None else [resolve_cut(leader, keep) for keep in cuts]
    labels = np.asarray(y).reshape(-1)
    if not len(labels):
        raise KerasTeamError("y", "0 labels", "labelled examples of the target to score the cuts on")
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" and not np.isfinite(x).all():
        raise KerasTeamError("x", "examples with NaN/inf values", "finite examples")
    scores = []
    for cut in chosen:
        start = time.perf_counter()
        features = body(leader, cut, share=True).predict(x, batch_size=batch_size, verbose=0)
        if len(features) != len(labels):  # known once read: `x` may be a dataset
            raise KerasTeamError("y", f"{len(labels)} labels", f"one label per example of x ({len(features)})")
        if not np.isfinite(features).all():  # e.g. a streamed NaN image, or a leader whose weights are not finite
            raise KerasTeamError("x", f"examples whose features at {cut.name!r} are NaN/inf",
                                 "finite examples and a leader with finite weights")
        score = leave_one_out_ncm_accuracy(features, labels)
        scores.append(CutScore(cut, score, time.perf_counter() - start))
    return sorted(scores, key=lambda s: -s.score)
