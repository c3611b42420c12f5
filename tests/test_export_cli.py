"""`keras-team export`: a run directory or a .keras file in, verified artefacts out; one-line errors."""

import dataclasses
import json
import shutil

import keras
import numpy as np
import pytest

from keras_team import Follower, Team, zoo
from keras_team.app import cli
from keras_team.app import export as app_export
from keras_team.app.recipe import Recipe, make_plan
from keras_team.app.workspace import Workspace
from keras_team.app.config import load_config
from keras_team.app.recipe import load_tasks
from keras_team.data import Task
from keras_team.export import litert


def _error_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith("keras-team: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def _run_dir(path, epochs):
    """A run directory as `keras-team run` leaves it: config.yaml and a team.keras (augmented target)."""
    (path / "config.yaml").write_text("data:\n  target: {shots: 40}\n  augment: [crop]\n")
    _, target = load_tasks(load_config(path / "config.yaml"))
    keras.utils.set_random_seed(0)
    team = Team({"leader": zoo.seed_cnn((8, 8, 1), 5, name="leader")}, [Follower(zoo.mlp(5), name="mlp")])
    team.compile()
    if epochs:
        team.fit(target.dataset("train", training=True), epochs=epochs, verbose=0)
    team.save(path / "team.keras")
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with a trained team: int8 parity needs learnt logits."""
    return _run_dir(tmp_path_factory.mktemp("run"), epochs=10)


@pytest.fixture(scope="module")
def untrained_run_dir(tmp_path_factory):
    """A run directory whose team never trained: enough to be refused."""
    return _run_dir(tmp_path_factory.mktemp("untrained"), epochs=0)


@pytest.mark.large
def test_export_of_a_run_writes_verified_artefacts_calibrated_on_unaugmented_data(run_dir, tmp_path, monkeypatch, capsys):
    run_dir = shutil.copytree(run_dir, tmp_path / "run")
    _, target = load_tasks(load_config(run_dir / "config.yaml"))
    chosen = {"leader": 0.25, "mlp": 0.75}  # what the run's report chose: the export weighs the members so
    (run_dir / "report.json").write_text(json.dumps({"class_names": list(target.class_names),
                                                     "ensemble": {"weights": chosen}}))
    calibrated = []
    original = litert._calibration_sample
    monkeypatch.setattr(litert, "_calibration_sample",
                        lambda data, *args: calibrated.append(np.array(data)) or original(data, *args))
    assert cli.main(["export", str(run_dir), "--formats", "saved_model,tflite,tflite-int8"]) == 0
    out = run_dir / "export"
    report = json.loads((out / "export_report.json").read_text())
    assert report["passed"] and list(report["artefacts"]) == ["saved_model", "tflite-float32", "tflite-int8"]
    assert (out / "serving" / "team" / "1" / "saved_model.pb").is_file() and (out / "serving" / "models.config").is_file()
    assert (out / "litert" / "team.int8.tflite").is_file()
    assert target.augment == ("crop",)
    (data,) = calibrated
    np.testing.assert_array_equal(data, target.splits["train"][0])  # the stored split, never augmented
    assert report["verified_on"] == "validation" and report["examples"] == len(target.labels("validation"))
    record = json.loads((out / "serving" / "team" / "1" / "assets.extra" / "keras_team.json").read_text())
    assert record["ensemble_weights"] == chosen
    printed = capsys.readouterr().out
    assert "tflite-int8" in printed
    assert f"verified on {len(target.labels('validation'))} validation examples" in printed.splitlines()[-1]

    assert cli.main(["export", str(run_dir), "--formats", "saved_model", "--version", "1"]) == cli.USER_ERROR
    assert "version=1" in _error_line(capsys)


def test_export_of_a_keras_model_file(untrained_run_dir, tmp_path):
    model = zoo.seed_cnn((8, 8, 1), 5, name="digits")
    model.save(tmp_path / "digits.keras")
    assert cli.main(["export", str(tmp_path / "digits.keras"), "--formats", "tflite-float16",
                     "--config", str(untrained_run_dir / "config.yaml")]) == 0
    report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    signatures = report["artefacts"]["tflite-float16"]["signatures"]
    assert list(signatures) == ["serving_default"] and list(signatures["serving_default"]) == ["digits"]
    labels = tmp_path / "export" / "litert" / "digits.float16.labels.txt"  # the config's target classes, by name
    assert labels.read_text().split() == ["5", "6", "7", "8", "9"]


@pytest.mark.large
def test_export_is_a_stage_of_a_run_with_its_reports_weights_verified_on_validation(run_dir, tmp_path, monkeypatch,
                                                                                    capsys):
    config = load_config(run_dir / "config.yaml", [f"output_dir={tmp_path / 'run'}", "export.name=digits",
                                                     "export.formats=[saved_model,tflite-float16]"])
    plan = make_plan(config)
    assert list(plan.stages)[-2:] == ["evaluate", "export"]
    reads, exporting = [], []  # (method, split, during the export stage) of every read of the target's splits
    for method in ("images", "labels", "dataset"):
        read = getattr(Task, method)
        monkeypatch.setattr(Task, method, lambda self, split, *a, _read=read, _m=method, **k:
                            reads.append((_m, split, bool(exporting))) or _read(self, split, *a, **k))
    export_team = Recipe.export_team

    def marked_export_team(self, *args):
        exporting.append(1)
        try:
            return export_team(self, *args)
        finally:
            exporting.pop()

    monkeypatch.setattr(Recipe, "export_team", marked_export_team)
    with Workspace.prepare(config.output_dir, config).start() as workspace:
        shutil.copyfile(run_dir / "team.keras", workspace.path("trained.keras"))
        zoo.seed_cnn((8, 8, 1), 5, name="baseline").save(workspace.path("baseline.keras"))
        report = Recipe(config, workspace, plan).report("trained.keras")
        figures = workspace.figures("export")
        assert list(figures) == ["saved_model", "tflite-float16"] and figures["tflite-float16"]["max_abs_diff"] < 0.05
        out = tmp_path / "run" / "export"
        assert (out / "serving" / "digits" / "1" / "saved_model.pb").is_file()
        assert (out / "litert" / "digits.float16.tflite").is_file()
        Recipe(config, workspace, plan).export_team("trained.keras", {})  # a resumed run does not export again
    assert "done earlier" in capsys.readouterr().out
    assert ("images", "validation", True) in reads and not [r for r in reads if r[1] == "test" and r[2]]
    assert [read[:2] for read in reads].count(("dataset", "validation")) == 1  # predicted once: export and report
    assert ("dataset", "test", False) in reads  # the evaluation's
    exported = json.loads((out / "export_report.json").read_text())
    assert exported["verified_on"] == "validation" and exported["examples"] == len(plan.target.labels("validation"))
    record = json.loads((out / "serving" / "digits" / "1" / "assets.extra" / "keras_team.json").read_text())
    assert record["ensemble_weights"] == report["ensemble"]["weights"]
    assert "export" not in make_plan(load_config(run_dir / "config.yaml")).stages  # off by default

    # A target without validation examples: verified on its training split; the test split is never read.
    target = plan.target
    plan.target = dataclasses.replace(target, splits={
        **target.splits, "validation": (target.images("train")[:0], target.labels("train")[:0]),
        "test": (np.zeros((3, 2), np.uint8), np.zeros(3, np.int32))})  # would fail the export's shape check
    config = load_config(run_dir / "config.yaml", [f"output_dir={tmp_path / 'train_only'}",
                                                     "export.formats=[tflite-float16]"])
    with Workspace.prepare(config.output_dir, config).start() as workspace:
        shutil.copyfile(run_dir / "team.keras", workspace.path("trained.keras"))
        Recipe(config, workspace, plan).export_team("trained.keras", {"leader": 0.5, "mlp": 0.5})
    exported = json.loads((tmp_path / "train_only" / "export" / "export_report.json").read_text())
    assert exported["verified_on"] == "train" and exported["examples"] == len(target.labels("train"))


def test_artefacts_are_verified_on_validation_else_train_never_test():
    x, y = np.arange(12, dtype=np.uint8).reshape(6, 2), np.array([0, 1] * 3, np.int32)
    task = Task("t", {"train": (x[:2], y[:2]), "validation": (x[2:4], y[2:4]), "test": (x[4:], y[4:])}, ("a", "b"))
    split, examples, labels = app_export.verification_data(task)
    assert split == "validation" and examples.tolist() == x[2:4].tolist() and labels.tolist() == [0, 1]
    few_shot = dataclasses.replace(task, splits={**task.splits, "validation": (x[:0], y[:0])})
    split, examples, _ = app_export.verification_data(few_shot)
    assert split == "train" and examples.tolist() == x[:2].tolist()


def test_a_model_that_does_not_fit_the_data_is_a_one_line_error(untrained_run_dir, tmp_path, capsys):
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(5)(inputs)).save(tmp_path / "wide.keras")
    argv = ["export", str(tmp_path / "wide.keras"), "--config", str(untrained_run_dir / "config.yaml")]
    assert cli.main(argv) == cli.USER_ERROR
    assert "like the model input (4,)" in _error_line(capsys)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["export", "/nonexistent/run"], "path='/nonexistent/run'"),
        (["export", "{run}", "--formats", "saved_model,onnx"], "formats='onnx'"),
        (["export", "{run}/config.yaml"], ".keras file"),
        (["export", "{run}", "--version", "0", "--formats", "saved_model"], "version=0"),
        (["run", "--set", "export.formats=[saved_model,onnx]"], "export.formats[1]='onnx'"),
    ],
)
def test_export_mistakes_print_one_line_and_exit_2(argv, phrase, untrained_run_dir, capsys):
    argv = [arg.format(run=untrained_run_dir) for arg in argv]
    assert cli.main(argv) == cli.USER_ERROR
    assert phrase in _error_line(capsys)
