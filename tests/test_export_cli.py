"""`keras-team export`: a run directory or a .keras file in, verified artefacts out; one-line errors."""

import json
import shutil

import keras
import numpy as np
import pytest

from keras_team import Follower, Team, zoo
from keras_team.app import cli
from keras_team.app.recipe import Recipe, make_plan
from keras_team.app.workspace import Workspace
from keras_team.app.config import load_config
from keras_team.app.recipe import load_tasks
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
def test_export_of_a_run_writes_verified_artefacts_calibrated_on_unaugmented_data(run_dir, monkeypatch, capsys):
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
    _, target = load_tasks(load_config(run_dir / "config.yaml"))
    assert target.augment == ("crop",)
    (data,) = calibrated
    np.testing.assert_array_equal(data, target.splits["train"][0])  # the stored split, never augmented
    assert report["examples"] == len(target.splits["test"][1])
    assert "tflite-int8" in capsys.readouterr().out

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
def test_export_is_a_stage_of_a_run_when_the_config_asks(run_dir, tmp_path, capsys):
    config = load_config(run_dir / "config.yaml", [f"output_dir={tmp_path / 'run'}", "export.name=digits",
                                                     "export.formats=[saved_model,tflite-float16]"])
    plan = make_plan(config)
    assert list(plan.stages)[-2:] == ["export", "evaluate"]
    with Workspace.prepare(config.output_dir, config).start() as workspace:
        shutil.copyfile(run_dir / "team.keras", workspace.path("trained.keras"))
        Recipe(config, workspace, plan).export_team("trained.keras")
        figures = workspace.figures("export")
        assert list(figures) == ["saved_model", "tflite-float16"] and figures["tflite-float16"]["max_abs_diff"] < 0.05
        assert (tmp_path / "run" / "export" / "serving" / "digits" / "1" / "saved_model.pb").is_file()
        assert (tmp_path / "run" / "export" / "litert" / "digits.float16.tflite").is_file()
        Recipe(config, workspace, plan).export_team("trained.keras")  # a resumed run does not export again
    assert "done earlier" in capsys.readouterr().out
    assert "export" not in make_plan(load_config(run_dir / "config.yaml")).stages  # off by default


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
