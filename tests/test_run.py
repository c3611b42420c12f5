"""`keras-team run` end to end on the offline digits, with interruption and resume."""

import csv
import json

import keras
import numpy as np
import pytest

from keras_team.app import cli, recipe

TINY = [
    "leader.epochs=2", "transfer.epochs=3", "followers.0.epochs=2", "baseline.epochs=1",
    "transfer.head.hidden=[8]", "data.target.shots=3",
]


class InterruptAt(keras.callbacks.Callback):
    """Stands in for Ctrl-C at the end of one epoch of one stage."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _args(output_dir, *extra):
    return ["run", "--quiet", "--output-dir", str(output_dir), *[a for s in [*TINY, *extra] for a in ("--set", s)]]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run interrupted in the middle of the transfer stage, then resumed to the end."""
    out = tmp_path_factory.mktemp("run") / "digits"
    callbacks = recipe.Recipe._callbacks

    def interrupting(self, stage):
        return callbacks(self, stage) + ([InterruptAt(epoch=1)] if stage == "transfer" else [])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe.Recipe, "_callbacks", interrupting)
        assert cli.main(_args(out)) == cli.INTERRUPTED
    state = json.loads((out / "state.json").read_text())
    leader_written = (out / "leader.keras").stat().st_mtime_ns
    assert list(state["stages"]) == ["leader"]
    assert cli.main(_args(out)) == 0
    return out, leader_written


def test_run_writes_models_report_plots_and_logs(finished_run):
    out, _ = finished_run
    for name in ("leader.keras", "team.keras", "baseline.keras", "config.yaml", "report.json", "report.md",
                 "accuracy.png", "learning_curves.png"):
        assert (out / name).is_file(), name
    assert any((out / "logs" / "tensorboard" / "transfer").rglob("events.out.tfevents.*"))
    report = json.loads((out / "report.json").read_text())
    assert set(report["members"]) == {"leader", "mlp"}
    assert {"baseline", "ensemble", "stages"} <= set(report)
    assert "| team ensemble" in (out / "report.md").read_text()


def test_saved_team_reproduces_the_reported_accuracy(finished_run):
    out, _ = finished_run
    config = cli.load_config(out / "config.yaml")
    _, target = recipe.load_tasks(config)
    x, y = target.splits["test"]
    team = keras.models.load_model(out / "team.keras")
    accuracy = float(np.mean(np.argmax(team.predict(x, verbose=0)["mlp"], -1) == y))
    report = json.loads((out / "report.json").read_text())
    assert accuracy == pytest.approx(report["members"]["mlp"]["test_accuracy"])


def test_resume_skips_finished_stages_and_continues_the_interrupted_one(finished_run):
    out, leader_written = finished_run
    assert (out / "leader.keras").stat().st_mtime_ns == leader_written
    with open(out / "logs" / "leader.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1"]  # trained once
    with open(out / "logs" / "transfer.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2"]  # continued at epoch 2


def test_finished_run_is_not_overwritten_unless_asked(finished_run, capsys):
    out, _ = finished_run
    before = (out / "report.json").read_text()
    assert cli.main(_args(out)) == cli.USER_ERROR
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "overwrite=true" in error and "Traceback" not in error
    assert (out / "report.json").read_text() == before


def test_evaluate_prints_every_member(finished_run, capsys):
    out, _ = finished_run
    assert cli.main(["evaluate", str(out)]) == 0
    table = capsys.readouterr().out
    for label in ("scratch baseline", "leader (transfer)", "mlp", "team ensemble"):
        assert label in table


def test_given_leader_fine_tuning_distillation_and_team_stage(finished_run, tmp_path):
    out, _ = finished_run
    args = _args(
        tmp_path / "second", f"leader.path={out / 'leader.keras'}", "transfer.unfreeze=1",
        "transfer.fine_tune_epochs=1", "team.epochs=1", "transfer.keep=block1_out", "transfer.head.kind=conv",
        "followers=[{name: soft, tap: probs, temperature: 2.0, hidden: [8], dropout: 0.0, "
        "distill: {temperature: 2.0, alpha: 0.5}, epochs: 1, learning_rate: 0.001}]",
    )
    assert cli.main(args) == 0
    stages = json.loads((tmp_path / "second" / "state.json").read_text())["stages"]
    assert list(stages) == ["leader", "transfer", "fine_tune", "followers", "team", "baseline", "evaluate"]
    assert stages["leader"]["loaded_from"].endswith("leader.keras")
