"""Several leaders in the config: each trained and transferred, one team of them all."""

import csv
import json

import keras
import numpy as np
import pytest

from keras_team.app import cli

TWO_LEADERS = """\
data:
  target: {shots: 3}
leader: {architecture: seed_cnn, epochs: 1}
transfer: {keep: 1, epochs: 1, head: {hidden: [8]}}
leaders:
  - {name: small}
  - {name: lenet, epochs: 2, transfer: {keep: 3}}
followers:
  - {name: both, tap: probs, leaders: [small, lenet], epochs: 1}
  - {name: each, tap: logits, combine: each, epochs: 1}
baseline: {epochs: 1}
"""


@pytest.fixture(scope="module")
def two_leader_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("leaders")
    config = root / "two.yaml"
    config.write_text(TWO_LEADERS)
    out = root / "run"
    assert cli.main(["run", "--quiet", "--config", str(config), "--output-dir", str(out)]) == 0
    return out


@pytest.mark.large
def test_each_leader_is_trained_and_transferred_with_its_own_settings(two_leader_run):
    out = two_leader_run
    stages = json.loads((out / "state.json").read_text())["stages"]
    assert list(stages)[:4] == ["leader_small", "leader_lenet", "transfer_small", "transfer_lenet"]
    for name, epochs in (("small", 1), ("lenet", 2)):  # the shorthand's epochs, its own
        with open(out / "logs" / f"leader_{name}.csv") as handle:
            assert len(list(csv.DictReader(handle))) == epochs
    for name, kept in (("small", 1), ("lenet", 3)):  # the shorthand's keep, its own
        assert keras.models.load_model(out / "stages" / f"transfer_{name}.keras").cut.depth == kept


@pytest.mark.large
def test_the_team_holds_every_leader_and_followers_read_them(two_leader_run):
    out = two_leader_run
    report = json.loads((out / "report.json").read_text())
    assert report["leaders"] == ["small", "lenet"]
    assert set(report["members"]) == {"small", "lenet", "both", "each_small", "each_lenet"}
    team = keras.models.load_model(out / "team.keras")
    x = np.random.default_rng(0).integers(0, 17, (4, *team.inputs[0].shape[1:])).astype("float32")
    student = keras.models.load_model(out / "stages" / "transfer_small.keras")
    np.testing.assert_allclose(team.predict(x, verbose=0)["small"], student.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    table = (out / "report.md").read_text()
    assert "| small (transfer)" in table and "| lenet (transfer)" in table


@pytest.mark.large
def test_evaluate_scores_a_saved_two_leader_team(two_leader_run, capsys):
    assert cli.main(["evaluate", str(two_leader_run)]) == 0
    table = capsys.readouterr().out
    report = json.loads((two_leader_run / "report.json").read_text())
    both = report["members"]["both"]["test_accuracy"]
    row = next(line for line in table.splitlines() if line.startswith("| both "))
    assert f"{both:.3f}" in row


def test_a_bad_cut_of_the_second_leader_fails_before_any_leader_trains(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(TWO_LEADERS.replace("keep: 3", "keep: 9"))
    out = tmp_path / "run"
    assert cli.main(["run", "--config", str(config), "--output-dir", str(out)]) == cli.USER_ERROR
    assert "leaders[1].transfer.keep=9" in capsys.readouterr().err
    assert not list(out.glob("leader*.keras"))
