"""The team ensemble is weighed on validation and is never worse there than its best member."""

import json

import keras
import numpy as np
import pytest

import keras_team
from keras_team import Follower, KerasTeamError, Team
from tests.helpers import blobs, trained_leader

CLASSES = 5


def logits_right_on(labels, right, confidence=4.0, wrong_confidence=1.0, seed=0):
    """Logits that put `confidence` on the true class where `right`, else `wrong_confidence` on another class."""
    rng = np.random.default_rng(seed)
    wrong = (labels + rng.integers(1, CLASSES, len(labels))) % CLASSES
    logits = np.zeros((len(labels), CLASSES))
    rows = np.arange(len(labels))
    logits[rows[right], labels[right]] = confidence
    logits[rows[~right], wrong[~right]] = wrong_confidence
    return logits


def accuracy(probabilities, labels):
    return float(np.mean(np.argmax(np.asarray(probabilities), axis=-1) == labels))


def test_a_useless_member_weighs_zero_and_the_ensemble_matches_the_best_member_not_the_mean():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, 400)
    val, test = slice(0, 200), slice(200, 400)
    members = {
        "leader": logits_right_on(labels, rng.random(400) < 0.85, seed=1),
        "useless": np.tile([8.0, 0, 0, 0, 0], (400, 1)),  # always class 0, confidently
    }
    weighting = Team.ensemble_weights({k: v[val] for k, v in members.items()}, labels[val])
    assert weighting.weights == {"leader": 1.0, "useless": 0.0}
    test_members = {k: v[test] for k, v in members.items()}
    weighted = accuracy(Team.ensemble(test_members, weighting.weights), labels[test])
    assert weighted == accuracy(test_members["leader"], labels[test])
    assert accuracy(Team.ensemble(test_members), labels[test]) < weighted - 0.2  # the mean is dragged down


def test_members_that_err_on_different_examples_are_combined():
    labels = np.arange(100) % CLASSES
    first = logits_right_on(labels, np.arange(100) < 60, seed=1)  # right on 0..59, weakly wrong elsewhere
    second = logits_right_on(labels, np.arange(100) >= 40, seed=2)  # right on 40..99
    weighting = Team.ensemble_weights({"a": first, "b": second}, labels)
    assert weighting.weights == {"a": 0.5, "b": 0.5}
    assert weighting.validation_accuracy == 1.0 > 0.6


@pytest.mark.parametrize("seed", range(5))
def test_on_validation_the_ensemble_is_within_one_standard_error_of_its_best_member(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, 60)
    members = {f"m{i}": rng.normal(size=(60, CLASSES)) * rng.uniform(0.5, 5) + np.eye(CLASSES)[labels] * rng.uniform(0, 3)
               for i in range(4)}
    weighting = Team.ensemble_weights(members, labels)
    best = max(accuracy(p, labels) for p in members.values())
    assert weighting.validation_accuracy >= best - 1 / np.sqrt(60)
    assert accuracy(Team.ensemble(members, weighting.weights), labels) == weighting.validation_accuracy
    assert sum(weighting.weights.values()) == pytest.approx(1.0)


def test_a_gap_that_is_noise_on_few_validation_examples_keeps_the_mean_and_on_many_drops_the_worse_member():
    def members(n):
        labels = np.arange(n) % CLASSES
        index = np.arange(n) % 10  # the same pattern on 10 or 100 examples
        return {"a": logits_right_on(labels, index < 6), "b": logits_right_on(labels, index < 8)}, labels

    few = Team.ensemble_weights(*members(10))
    assert (few.weights, few.rule) == ({"a": 0.5, "b": 0.5}, "mean of the best")
    many = Team.ensemble_weights(*members(100))
    assert many.weights == {"a": 0.0, "b": 1.0}
    assert few.validation_accuracy == many.validation_accuracy == 0.8  # the mean does as well as b here
    none = Team.ensemble_weights({"a": np.zeros((0, CLASSES)), "b": np.zeros((0, CLASSES))}, np.zeros(0, "int32"))
    assert (none.weights, none.rule) == ({"a": 0.5, "b": 0.5}, "equal weights, no validation")


def test_greedy_selection_is_used_when_it_beats_the_mean_by_more_than_one_standard_error():
    labels = np.arange(1000) % CLASSES
    index = np.arange(1000) % 40
    careful = logits_right_on(labels, index >= 5, confidence=2.0, seed=1)  # 87.5% right, unsure
    # 85% right, as sure when wrong as when right, wrong on other examples: not clearly worse, but it sways the mean
    sure = logits_right_on(labels, (index < 5) | (index > 10), confidence=9.0, wrong_confidence=9.0, seed=2)
    weighting = Team.ensemble_weights({"careful": careful, "sure": sure}, labels)
    assert weighting.rule == "greedy selection" and weighting.weights == {"careful": 1.0, "sure": 0.0}
    assert weighting.validation_accuracy == 0.875 > accuracy(Team.ensemble({"c": careful, "s": sure}), labels)


@pytest.mark.parametrize("weights", [{"a": -1.0}, {"a": 0.0}, {"c": 1.0}, {"a": float("nan")}])
def test_ensemble_refuses_weights_it_cannot_use(weights):
    with pytest.raises(KerasTeamError, match="weights"):
        Team.ensemble({"a": np.zeros((1, 2)), "b": np.zeros((1, 2))}, weights)


def test_ensemble_weights_refuse_predictions_that_do_not_fit_the_labels():
    with pytest.raises(KerasTeamError, match="predictions"):
        Team.ensemble_weights({"a": np.zeros((3, 2))}, np.zeros(4, "int32"))


def useless_follower(classes=CLASSES):
    """A follower that always says class 0 with confidence, whatever it reads."""
    bias = np.zeros(classes)
    bias[0] = 8.0
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(
        classes, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(bias))], name="useless")
    return Follower(model)


def test_a_run_report_gives_the_weights_chosen_on_validation_and_shows_them(tmp_path):
    from keras_team.app.config import load_config
    from keras_team.app.report import evaluate_team, format_table, write_report
    from keras_team.app.workspace import Workspace

    keras.utils.set_random_seed(0)
    x, y = blobs(n=200, seed=1)
    task = keras_team.data.from_arrays(x, y, validation=0.3, test=0.3, seed=0)
    student = keras_team.transfer(trained_leader(), keep=3, head=keras_team.heads.cosine(CLASSES))
    keras_team.heads.imprint(student, *task.splits["train"])  # a nearest-class-mean leader, no training
    team = Team({"leader": student}, [useless_follower()])
    report = evaluate_team(team, task)
    ensemble = report["ensemble"]
    assert ensemble["weights"] == {"leader": 1.0, "useless": 0.0}
    assert ensemble["test_accuracy"] == report["members"]["leader"]["test_accuracy"] > ensemble["equal_weights_test_accuracy"]
    assert ensemble["validation_examples"] == len(task.splits["validation"][1])
    table = format_table(report)
    assert "| useless" in table and table.splitlines()[0].endswith("| ensemble weight |")
    assert [line.split("|")[-2].strip() for line in table.splitlines()[2:4]] == ["1.00", "0.00"]
    write_report(Workspace(tmp_path, load_config(), {}, replace=False), report)
    assert json.loads((tmp_path / "report.json").read_text())["ensemble"]["weights"]["useless"] == 0.0
    assert "team ensemble: weights leader 1.00, useless 0.00 (mean of the best" in (tmp_path / "report.md").read_text()
