"""`keras-team run` end to end on the offline digits: interruption, resume, nothing lost, output."""

import contextlib
import csv
import io
import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

import keras_team
from keras_team.app import cli, recipe, workspace
from keras_team.app.config import load_config
from keras_team.errors import KerasTeamError
from tests.helpers import same_weights, weights_of

TINY = [
    "leader.epochs=2", "transfer.epochs=3", "followers.0.epochs=2", "followers.1.epochs=2", "baseline.epochs=1",
    "transfer.head.hidden=[8]", "data.target.shots=3",
]
# Two followers and a team stage (the stages whose files and records a crash could confuse);
# target classes that overlap the source's.
TWO_FOLLOWERS = [
    "leader.epochs=1", "transfer.epochs=2", "baseline.epochs=2", "team.epochs=1", "transfer.head.hidden=[8]",
    "data.target.shots=3", "data.target.classes=[4, 5, 6]",
    "followers=[{name: a, hidden: [8], epochs: 2}, {name: b, tap: logits, hidden: [8], dropout: 0.2, epochs: 2}]",
]


class InterruptAt(keras.callbacks.Callback):
    """Stands in for Ctrl-C at the end of one epoch (or, with `epoch=None`, the start) of one stage."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_train_begin(self, logs=None):
        if self.epoch is None:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _args(output_dir, *extra, settings=TINY, level="--quiet"):
    flags = [level] if level else []
    return ["run", *flags, "--output-dir", str(output_dir), *[a for s in [*settings, *extra] for a in ("--set", s)]]


def _interrupting(stage_to_stop, epoch):
    callbacks = recipe.Recipe._callbacks

    def patched(self, stage, epochs, checkpoint):
        return callbacks(self, stage, epochs, checkpoint) + ([InterruptAt(epoch)] if stage == stage_to_stop else [])

    return patched


def _main(argv):
    """cli.main with its stdout captured."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(argv)
    return status, out.getvalue()


def _epochs(path):
    with open(path) as handle:
        return [row["epoch"] for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run interrupted after the first epoch of its last training stage, then resumed to the end (--quiet)."""
    out = tmp_path_factory.mktemp("run") / "digits"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe, "CHECKPOINT_SECONDS", 0)  # a checkpoint at every epoch: the stage resumes
        patch.setattr(recipe.Recipe, "_callbacks", _interrupting("baseline", epoch=0))
        assert cli.main(_args(out, settings=TWO_FOLLOWERS)) == cli.INTERRUPTED
    state = json.loads((out / "state.json").read_text())
    leader_written = (out / "leader.keras").stat().st_mtime_ns
    assert list(state["stages"]) == ["leader", "transfer", "followers", "team"]
    status, printed = _main(_args(out, settings=TWO_FOLLOWERS))
    assert status == 0
    return out, leader_written, printed


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The same run stopped at the start of follower b, then by a crash between saving the
    followers stage's team and recording it, then resumed to the end at the default output
    level (off a terminal: a line per stage)."""
    out = tmp_path_factory.mktemp("resumed") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe.Recipe, "_callbacks", _interrupting("follower_b", epoch=None))
        assert cli.main(_args(out, settings=TWO_FOLLOWERS)) == cli.INTERRUPTED
    state = json.loads((out / "state.json").read_text())
    assert list(state["parts"]["followers"]) == ["a"] and "followers" not in state["stages"]
    follower_a = (out / "stages" / "followers" / "a.weights.h5").stat().st_mtime_ns
    finish = workspace.Workspace.finish

    def crash_before_recording(self, stage, figures, part=None):
        if stage == "followers" and part is None:
            assert (self.path("stages/followers.keras")).is_file()  # saved, not yet recorded
            raise KeyboardInterrupt
        return finish(self, stage, figures, part)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(workspace.Workspace, "finish", crash_before_recording)
        assert cli.main(_args(out, settings=TWO_FOLLOWERS)) == cli.INTERRUPTED
    status, printed = _main(_args(out, settings=TWO_FOLLOWERS, level=None))
    assert status == 0
    return out, follower_a, printed


@pytest.mark.large
def test_run_writes_models_report_plots_and_logs(finished_run):
    out, _, _ = finished_run
    for name in ("leader.keras", "team.keras", "baseline.keras", "config.yaml", "report.json", "report.md",
                 "accuracy.png", "learning_curves.png", "stages/transfer.keras", "stages/followers.keras"):
        assert (out / name).is_file(), name
    assert any((out / "logs" / "tensorboard" / "leader").rglob("events.out.tfevents.*"))  # the default transfer is a probe: no fit logs
    report = json.loads((out / "report.json").read_text())
    assert set(report["members"]) == {"leader", "a", "b"}
    assert {"baseline", "ensemble", "stages"} <= set(report)
    assert "| team ensemble" in (out / "report.md").read_text()


@pytest.mark.large
def test_report_records_config_seed_cut_and_versions(finished_run):
    out, _, _ = finished_run
    report = json.loads((out / "report.json").read_text())
    assert report["config"] == load_config(out / "config.yaml").to_dict()
    assert report["seed"] == 0
    leader = keras.models.load_model(out / "leader.keras")
    cut = keras_team_cut(leader, report["config"]["transfer"]["keep"])
    assert report["cut"] == {"name": cut.name, "depth": cut.depth, "output_shape": list(cut.output_shape)}
    assert report["versions"]["keras"] == keras.__version__
    assert "wall-clock seconds" in (out / "report.md").read_text()


def keras_team_cut(leader, keep):
    return recipe.check_keep(leader, keep)  # None: the architecture's default cut


@pytest.mark.large
def test_saved_team_reproduces_the_reported_accuracy(finished_run):
    out, _, _ = finished_run
    config = cli.load_config(out / "config.yaml")
    _, target = recipe.load_tasks(config)
    x, y = target.splits["test"]
    team = keras.models.load_model(out / "team.keras")
    accuracy = float(np.mean(np.argmax(team.predict(x, verbose=0)["b"], -1) == y))
    report = json.loads((out / "report.json").read_text())
    assert accuracy == pytest.approx(report["members"]["b"]["test_accuracy"])


@pytest.mark.large
def test_resume_skips_finished_stages_and_continues_the_interrupted_one(finished_run):
    out, leader_written, _ = finished_run
    assert (out / "leader.keras").stat().st_mtime_ns == leader_written
    assert _epochs(out / "logs" / "leader.csv") == ["0"]  # trained once
    assert _epochs(out / "logs" / "baseline.csv") == ["0", "1"]  # continued at epoch 1


@pytest.mark.large
def test_quiet_prints_only_the_table(finished_run):
    _, _, printed = finished_run
    lines = printed.strip().splitlines()
    assert lines and all(line.startswith("|") for line in lines), printed


@pytest.mark.large
def test_default_output_is_a_line_per_stage_and_the_table(resumed):
    _, _, printed = resumed
    lines = printed.strip().splitlines()
    for stage in ("leader", "transfer", "followers", "team", "baseline"):
        assert sum(line.startswith(stage) for line in lines) == 1, printed
    assert sum(line.startswith("|") for line in lines) == 2 + 5
    assert not any("Epoch" in line or "step" in line for line in lines), printed
    assert len(lines) < 25, printed


@pytest.mark.large
def test_overlapping_classes_are_said_on_screen_and_in_the_report(resumed):
    out, _, printed = resumed
    assert "warning: target classes [4] are also source classes" in printed
    report = json.loads((out / "report.json").read_text())
    assert any("[4]" in warning for warning in report["warnings"])


@pytest.mark.large
def test_resumed_run_gives_the_weights_of_an_uninterrupted_one(finished_run, resumed):
    """Up to the team stage, finished_run ran without interruption; resumed was stopped twice."""
    (whole, _, _), (again, _, _) = finished_run, resumed
    for name in ("leader.keras", "stages/transfer.keras", "stages/followers.keras", "stages/team.keras", "team.keras"):
        a, b = (keras.models.load_model(root / name) for root in (whole, again))
        assert same_weights(weights_of(a), weights_of(b)), name
    reports = [json.loads((root / "report.json").read_text()) for root in (whole, again)]
    assert reports[0]["members"] == reports[1]["members"]


@pytest.mark.large
def test_resuming_the_followers_stage_keeps_finished_followers(resumed):
    out, follower_a, _ = resumed
    assert (out / "stages" / "followers" / "a.weights.h5").stat().st_mtime_ns == follower_a  # not retrained
    for follower in ("a", "b"):
        assert _epochs(out / "logs" / f"follower_{follower}.csv") == ["0", "1"]  # no duplicate epochs
    stages = json.loads((out / "state.json").read_text())["stages"]
    assert list(stages) == ["leader", "transfer", "followers", "team", "baseline", "evaluate"]
    assert set(stages["followers"]) == {"a", "b"}


@pytest.mark.large
def test_followers_reading_the_same_taps_run_the_leader_once_over_each_split(tmp_path, monkeypatch):
    """The default team (mlp, probe on shifted copies, pooled probe, all on `features`): one pass over the training
    split and one over validation for all three, plus the probe's shifted copies."""
    passes = []
    cache_passes = keras_team.caching._cache_passes

    def counted(compute, keys, dataset, **kwargs):
        if kwargs["what"].startswith("follower"):  # not the transfer stage's cache of its frozen part
            passes.append((kwargs["what"], kwargs["views"]))
        return cache_passes(compute, keys, dataset, **kwargs)

    monkeypatch.setattr(keras_team.caching, "_cache_passes", counted)
    assert cli.main(_args(tmp_path / "run", "followers.2.epochs=2")) == 0
    shared = "followers mlp, probe, pooled"
    assert passes == [(shared, 1), (shared, 1), ("follower 'probe'", 7)], passes


@pytest.mark.large
def test_finished_run_is_not_overwritten_unless_asked(finished_run, capsys):
    out, _, _ = finished_run
    before = (out / "report.json").read_text()
    assert cli.main(_args(out)) == cli.USER_ERROR
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "overwrite=true" in error and "Traceback" not in error
    assert (out / "report.json").read_text() == before


@pytest.mark.large
def test_overwrite_with_a_mistake_keeps_the_finished_run(finished_run, capsys):
    out, _, _ = finished_run
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert cli.main(_args(out, "overwrite=true", "data.target.shots=500")) == cli.USER_ERROR
    assert "data.target.shots=500" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


@pytest.mark.large
def test_overwrite_never_deletes_the_leader_it_reads(finished_run, capsys):
    out, _, _ = finished_run
    leader = out / "leader.keras"
    assert cli.main(_args(out, "overwrite=true", f"leader.path={leader}")) == cli.USER_ERROR
    assert "leader.path" in capsys.readouterr().err
    assert leader.is_file() and (out / "report.json").is_file()


def test_overwrite_never_replaces_a_folder_of_other_files(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert cli.main(_args(mine, "overwrite=true")) == cli.USER_ERROR
    assert "never replaces" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "years of work" and len(list(mine.iterdir())) == 1


def test_a_run_failing_its_checks_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_args(out, "followers.0.tap=nowhere")) == cli.USER_ERROR
    assert "followers[0].tap" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.large
def test_evaluate_prints_every_member(finished_run, capsys):
    out, _, _ = finished_run
    assert cli.main(["evaluate", str(out)]) == 0
    table = capsys.readouterr().out
    for label in ("| scratch baseline", "| leader (transfer)", "| a ", "| b ", "| team ensemble"):
        assert label in table


@pytest.mark.large
def test_evaluate_says_what_is_wrong_with_a_run_file(finished_run, tmp_path, capsys):
    out, _, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "baseline.keras").write_bytes(b"\0" * 100)
    assert cli.main(["evaluate", str(copy)]) == cli.USER_ERROR
    error = capsys.readouterr().err
    assert "baseline.keras" in error and "not a .keras archive" in error and "File not found" not in error
    shutil.copyfile(out / "leader.keras", copy / "team.keras")
    assert cli.main(["evaluate", str(copy)]) == cli.USER_ERROR
    assert "holds a keras_team Team" in capsys.readouterr().err


@pytest.mark.large  # an end-to-end run
def test_nan_stops_the_stage_saves_nothing_and_the_corrected_command_runs(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_args(out, "leader.epochs=1", "leader.learning_rate=1e30")) == cli.USER_ERROR
    error = capsys.readouterr().err
    assert "leader.learning_rate" in error and "NaN" in error and error.count("\n") == 1
    assert json.loads((out / "state.json").read_text())["stages"] == {}
    assert not list(out.glob("*.keras"))
    # The corrected command is not refused: the failed run finished no stage.
    corrected = load_config(overrides=[*TINY, "leader.epochs=1", f"output_dir={out}"])
    assert not workspace.Workspace.prepare(out, corrected).state["stages"]


@pytest.mark.large
def test_given_leader_fine_tuning_distillation_and_team_stage(finished_run, tmp_path):
    out, _, _ = finished_run
    args = _args(
        tmp_path / "second", f"leader.path={out / 'leader.keras'}", "transfer.unfreeze=1",
        "transfer.fine_tune_epochs=1", "team.epochs=1", "transfer.keep=block1_out", "transfer.head.kind=conv",
        "followers=[{name: soft, tap: probs, temperature: 2.0, hidden: [8], dropout: 0.0, "
        "distill: {temperature: 2.0, student_loss_weight: 0.5}, epochs: 1, learning_rate: 0.001}]",
    )
    assert cli.main(args) == 0
    stages = json.loads((tmp_path / "second" / "state.json").read_text())["stages"]
    assert list(stages) == ["leader", "transfer", "fine_tune", "followers", "team", "baseline", "evaluate"]
    assert stages["leader"]["loaded_from"].endswith("leader.keras")


@pytest.mark.large
def test_cached_transfer_and_fine_tune_stages_give_the_full_forward_weights(finished_run, tmp_path):
    """`transfer.cache` (the frozen part run once, for the head and the fine-tuning) changes no weight."""
    out, _, _ = finished_run
    saved = {}
    for cache in ("true", "false"):
        run = tmp_path / cache
        assert cli.main(_args(run, f"leader.path={out / 'leader.keras'}", "transfer.head.kind=dense",
                              "transfer.learning_rate=0.003", "transfer.unfreeze=1", "transfer.fine_tune_epochs=2",
                              f"transfer.cache={cache}", "followers=[]", "baseline.epochs=1")) == 0
        stages = json.loads((run / "state.json").read_text())["stages"]
        assert stages["fine_tune"].get("cached", False) == (cache == "true")
        saved[cache] = [weights_of(keras_team.load_model(run / "stages" / f"{stage}.keras"))
                        for stage in ("transfer", "fine_tune")]
    for cached, full in zip(saved["true"], saved["false"]):
        for a, b in zip(cached, full):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# --- the workspace on its own (no training) ------------------------------------------

def _finished(root, config):
    ws = workspace.Workspace.prepare(root, config)
    with ws.start():
        ws.finish("leader", {})
        ws.finish("evaluate", {})


def test_overwrite_moves_the_old_run_aside_until_the_first_stage_is_saved(tmp_path):
    root = tmp_path / "run"
    config = load_config(overrides=[f"output_dir={root}"])
    _finished(root, config)
    (root / "report.json").write_text("old")
    with pytest.raises(KerasTeamError, match="overwrite=true"):
        workspace.Workspace.prepare(root, config)
    ws = workspace.Workspace.prepare(root, config.model_copy(update={"overwrite": True}))
    assert (root / "report.json").read_text() == "old"  # prepared: nothing touched yet
    with ws.start():
        aside = ws.replaced
        assert (aside / "report.json").read_text() == "old" and not (root / "report.json").exists()
        ws.finish("leader", {})
        assert not aside.exists()


def test_two_runs_cannot_share_a_directory(tmp_path):
    root = tmp_path / "run"
    config = load_config(overrides=[f"output_dir={root}"])
    with workspace.Workspace.prepare(root, config).start():
        with pytest.raises(KerasTeamError, match="another run holds its lock"):
            with workspace.Workspace.prepare(root, config).start():
                pass
    with workspace.Workspace.prepare(root, config).start():  # released
        pass


def test_an_output_dir_below_a_file_is_refused_before_anything_runs(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert cli.main(_args(tmp_path / "file" / "run")) == cli.USER_ERROR
    assert "is a file" in capsys.readouterr().err


def test_an_output_dir_that_is_not_writable_is_refused(tmp_path, monkeypatch):
    def refused(path, data):  # as root, chmod would not stop writes
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pathlib.Path, "write_bytes", refused)
    config = load_config(overrides=[f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(KerasTeamError, match="may create and write to .*Permission denied"):
        workspace.Workspace.prepare(tmp_path / "run", config)
    assert not (tmp_path / "run").exists()


def test_a_target_of_one_class_is_refused():
    with pytest.raises(KerasTeamError, match="data.target.classes.*at least 2 classes"):
        recipe.load_tasks(load_config(overrides=["data.target.classes=[5]"]))


def test_the_progress_bar_counts_epochs_and_shows_the_epoch_figures(capsys):
    from keras_team.app.progress import Output

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.ones((8, 3)), np.arange(8) % 2
    output = Output("bar")
    model.fit(x, y, validation_data=(x, y), epochs=3, verbose=output.fit_verbose, callbacks=output.callbacks(3))
    printed = capsys.readouterr().out
    assert "3/3" in printed and "val_loss" in printed and "Epoch" not in printed
    last = float(printed.rsplit("val_loss: ", 1)[1].split()[0])
    assert last == pytest.approx(model.evaluate(x, y, verbose=0), abs=1e-3)  # the epoch's figure, not a running mean
