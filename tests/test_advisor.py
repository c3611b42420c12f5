"""The cut advisor: `keras_team.rank_cuts` scores every cut without training; noise ranks last."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_team
from keras_team import KerasTeamError
from keras_team.transferability import leave_one_out_ncm_accuracy
from tests.helpers import blobs, trained_leader


class Noise(keras.layers.Layer):
    """Features that ignore the input: seeded Gaussian noise of the input's shape."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seeds = keras.random.SeedGenerator(7)

    def call(self, inputs):
        return keras.random.normal(keras.ops.shape(inputs), seed=self.seeds)


def with_noise_cut(leader):
    """The leader with a cut whose features are noise after its logits."""
    return keras.Model(leader.inputs, Noise(name="noise")(leader.outputs[0]), name="noisy")


def naive_loo_ncm(features, labels):
    """Reference: for each example, recompute every class mean without it, pick the nearest by cosine."""
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    right, counted = 0, 0
    for i in range(len(f)):
        rest = np.arange(len(f)) != i
        if np.sum(labels[rest] == labels[i]) == 0:
            continue
        counted += 1
        sims = {}
        for c in np.unique(labels):
            members = f[rest & (labels == c)]
            mean = members.sum(axis=0)
            sims[c] = f[i] @ mean / np.linalg.norm(mean)
        best = max(sims, key=sims.get)
        right += best == labels[i] and sum(s == sims[best] for s in sims.values()) == 1
    return right / counted


@pytest.mark.parametrize("seed", range(3))
def test_the_score_is_the_leave_one_out_nearest_class_mean_accuracy(seed):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([[0, 1, 2], rng.integers(0, 3, 27), [3]])  # class 3 has one example: left out
    features = rng.normal(size=(31, 6)) + np.eye(6)[labels] * rng.uniform(0.5, 2)
    assert leave_one_out_ncm_accuracy(features, labels) == pytest.approx(naive_loo_ncm(features, labels))


def test_a_cut_whose_features_are_noise_ranks_last():
    keras.utils.set_random_seed(0)
    leader = with_noise_cut(trained_leader())
    x, y = blobs(n=60, seed=5)  # a task the leader's features separate
    ranking = keras_team.rank_cuts(leader, x, y)
    names = [score.cut.name for score in ranking]
    assert sorted(names) == sorted(c.name for c in keras_team.cut_points(leader))  # every cut, once
    assert names[-1] == "noise"
    assert ranking[-1].score < 0.4 < 0.9 < ranking[0].score  # chance is 0.2 for 5 classes
    assert [s.score for s in ranking] == sorted((s.score for s in ranking), reverse=True)
    assert all(s.seconds > 0 for s in ranking)


def test_rank_cuts_scores_only_the_cuts_asked_and_names_bad_input():
    x, y = blobs(n=40, seed=5)
    leader = trained_leader()
    assert {s.cut.name for s in keras_team.rank_cuts(leader, x, y, cuts=["pool1", 3])} == {"pool1", "fc1"}
    with pytest.raises(KerasTeamError, match="keep"):
        keras_team.rank_cuts(leader, x, y, cuts=["nope"])
    with pytest.raises(KerasTeamError, match="y="):
        keras_team.rank_cuts(leader, x, y[:-1])
    with pytest.raises(KerasTeamError, match="y="):
        keras_team.rank_cuts(leader, x[:3], np.array([0, 1, 2]))  # no class with two examples
    with pytest.raises(KerasTeamError, match="y='0 labels'"):
        keras_team.rank_cuts(leader, x[:0], y[:0])
    nan = np.array(x, np.float32)
    nan[4] = np.nan
    with pytest.raises(KerasTeamError, match="x='examples with NaN/inf values'"):
        keras_team.rank_cuts(leader, nan, y)
    broken = keras.models.clone_model(leader)
    broken.set_weights([np.full_like(w, np.inf) for w in leader.get_weights()])
    with pytest.raises(KerasTeamError, match="features at 'pool1' are NaN/inf"):  # a dataset is read, then checked
        keras_team.rank_cuts(broken, tf.data.Dataset.from_tensor_slices(x).batch(8), y, cuts=["pool1"])


@pytest.mark.large
def test_keras_team_cuts_rank_prints_every_cut_best_first_with_its_seconds(tmp_path, capsys):
    from keras_team.app import cli

    trained_leader().save(tmp_path / "leader.keras")
    assert cli.main(["cuts", str(tmp_path / "leader.keras"), "--rank", "--data", "digits",
                     "--set", "data.target.shots=1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("digits: 5 training + ") and "nearest-class-mean" in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == [str(i) for i in range(1, len(rows) + 1)]
    assert sorted(row[1] for row in rows) == sorted(c.name for c in keras_team.cut_points(trained_leader()))
    scores = [float(row[3]) for row in rows]
    assert scores == sorted(scores, reverse=True) and all(float(row[4]) > 0 for row in rows)
