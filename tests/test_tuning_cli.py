"""`keras-team tune`: the trial table, best config, resume, overwrite guard, distributed run and errors."""

import contextlib
import csv
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import keras
import pytest
import yaml

import keras_team
from keras_team.app.cli import main
from keras_team.app.config import load_config
from keras_team.app.recipe import load_tasks
from keras_team.app.tune import TuneJob, lock_path
from keras_team.tuning import hypermodel as hypermodel_module

TINY = {
    "data": {"target": {"shots": 3}},
    "tune": {
        "max_trials": 3, "epochs": 2, "validation_per_class": 4,
        "space": {"cuts": ["pool2", "fc1"], "top_k_cuts": 1, "head_layers": [0], "dropout": [0.0],
                  "learning_rate": [0.01, 0.003],
                  "max_unfreeze": 1, "fine_tune_learning_rate": [0.001]},
    },
}


@pytest.fixture(scope="module")
def leader_file(tmp_path_factory):
    """One seed_cnn leader trained an epoch on digits 0-4, shared by the searches below."""
    source, _ = keras_team.data.digits_tasks(shots=3)
    keras.utils.set_random_seed(0)
    leader = keras_team.zoo.seed_cnn(source.input_shape, source.num_classes)
    leader.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    leader.fit(*source.splits["train"], epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("leader") / "leader.keras"
    leader.save(path)
    return str(path)


def _config(directory, leader_file):
    path = directory / "tiny.yaml"
    tune = {**TINY["tune"], "output_dir": str(directory / "tune")}
    path.write_text(yaml.safe_dump({**TINY, "leader": {"path": leader_file}, "tune": tune}))
    return path


@pytest.fixture()
def config_file(tmp_path, leader_file):
    return _config(tmp_path, leader_file)


def _rows(out):
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


def _main(argv):
    """main with its stdout captured."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(argv)
    return status, out.getvalue()


@pytest.fixture(scope="module")
def resumed_search(tmp_path_factory, leader_file):
    """A search interrupted in its second trial, then rerun to the end; the output of both."""
    directory = tmp_path_factory.mktemp("search")
    config_file = _config(directory, leader_file)
    original, calls = hypermodel_module.TransferHyperModel.fit, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hypermodel_module.TransferHyperModel, "fit", interrupted)
        status, first = _main(["tune", "--config", str(config_file)])
    assert status == 130
    trial_0 = json.loads((directory / "tune" / "search" / "trial_0" / "keras_team_trial.json").read_text())
    status, second = _main(["tune", "--config", str(config_file)])
    assert status == 0
    return config_file, directory / "tune", trial_0, first, second


@pytest.mark.large
def test_tune_writes_table_plot_and_a_best_config_that_run_takes(resumed_search, leader_file, capsys):
    config_file, out, _, first, second = resumed_search
    printed = first + second
    assert "25 training examples" not in printed and "15 training examples, 20 validation examples" in printed
    rows = _rows(out)
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    table = json.loads((out / "trials.json").read_text())
    # The cut advisor ranked both allowed cuts (on training and validation examples) and the search kept the best.
    ranking = table["cut_ranking"]
    assert sorted(r["cut"] for r in ranking) == ["fc1", "pool2"] and ranking[0]["score"] >= ranking[1]["score"]
    assert [r["searched"] for r in ranking] == [True, False] and "cut advisor: searching the top 1 of 2" in printed
    assert all(row["cut"] == ranking[0]["cut"] and row["cache"] in ("hit", "miss") and float(row["seconds"]) > 0
               for row in rows)
    assert len(re.findall(r"\] trial \d: cut=", printed)) == 3  # progress per trial
    assert table["validation_examples"] == 20 and table["train_examples"] == 15
    assert [t["score"] for t in table["trials"]] == [pytest.approx(float(row["score"])) for row in rows]
    assert (out / "score_by_cut.png").stat().st_size > 0
    top = max(float(row["score"]) for row in rows)
    best = load_config(out / "best_config.yaml")  # what `keras-team run --config` reads
    assert (best.transfer.keep, best.transfer.unfreeze) in [
        (row["cut"], int(row["unfreeze"])) for row in rows if float(row["score"]) == top]  # a best trial (ties)
    assert best.leader.path == leader_file and best.tune == load_config(config_file).tune
    assert best.transfer.epochs + best.transfer.fine_tune_epochs == 2
    # A finished search is not overwritten unless asked.
    assert main(["tune", "--config", str(config_file)]) == 2
    assert "holds a finished search" in capsys.readouterr().err


@pytest.mark.large
def test_interrupted_tune_resumes_without_rerunning_finished_trials(resumed_search):
    _, out, trial_0, _, second = resumed_search
    assert "resuming the search" in second
    rows = _rows(out)
    assert [row["trial"] for row in rows] == ["0", "1", "2"] and all(row["status"] == "COMPLETED" for row in rows)
    assert float(rows[0]["seconds"]) == trial_0["seconds"]  # trial 0 was not run again


@pytest.mark.large
def test_distributed_tune_runs_each_trial_once_and_writes_the_best_config_once(tmp_path, capfd):
    config_file = tmp_path / "tiny.yaml"  # no leader.path: the chief trains the leader, the workers load it
    tune = {**TINY["tune"], "output_dir": str(tmp_path / "tune")}
    config_file.write_text(yaml.safe_dump({**TINY, "leader": {"architecture": "seed_cnn", "epochs": 1}, "tune": tune}))
    assert main(["tune", "--config", str(config_file), "--workers", "2"]) == 0
    printed = capfd.readouterr().out  # the workers' output too (file-descriptor capture)
    out = tmp_path / "tune"
    rows = _rows(out)
    assert sorted(row["trial"] for row in rows) == ["0", "1", "2"]
    assert all(row["status"] == "COMPLETED" and row["tuner_id"] in ("tuner0", "tuner1") for row in rows)
    ran = re.findall(r"\[(tuner\d)\] trial (\d):", printed)
    assert sorted(trial for _, trial in ran) == ["0", "1", "2"]  # every trial ran exactly once
    assert "oracle at 127.0.0.1:" in printed
    assert printed.count("best: ") == 1 and printed.count("training the leader") == 1
    assert load_config(out / "best_config.yaml").leader.path == str((out / "leader.keras").resolve())


@pytest.mark.parametrize("flags, message", [
    (["--max-trials", "0"], "tune.max_trials=0 is not valid: expected an int >= 1"),
    (["--tuner", "annealing"], "tune.tuner='annealing' is not valid: expected one of random, bayesian, hyperband, grid"),
    (["--set", "tune.objective=val_auc"], "tune.objective='val_auc' is not valid"),
    (["--set", "tune.space.cuts=[fc3]"], "tune.space.cuts='fc3' is not valid: expected a cut-point layer name"),
    (["--set", "tune.space.cuts=[conv1]", "--set", "tune.space.max_unfreeze=2"],
     "tune.space.max_unfreeze=2 is not valid: expected an int from 0 to 1"),
    (["--set", "tune.space.dropout=[]"], "tune.space.dropout=[] is not valid"),
    (["--set", "leader.path=null", "--set", "leader.application=MobileNet3Small"],
     "leader.application='MobileNet3Small' is not valid"),
])
def test_tune_user_errors_print_one_line_and_exit_2(config_file, flags, message, capsys):
    assert main(["tune", "--config", str(config_file), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_second_tune_on_a_directory_in_use_fails_in_one_line_and_a_killed_ones_lock_does_not_block(config_file,
                                                                                                    capsys):
    root = load_config(config_file).tune.output_dir
    lock = lock_path(pathlib.Path(root))
    holder = subprocess.Popen(  # a chief holding the lock, as `keras-team tune` does
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d' % os.getpid()); print('held', flush=True)\n"
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["tune", "--config", str(config_file)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert f"tune.output_dir='{root}'" in err and f"process {holder.pid} is running a search in it" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with TuneJob(load_config(config_file))._locked():  # the killed chief's lock went with its process
        assert lock.read_text().strip() == str(os.getpid())


@pytest.mark.large
def test_tune_builds_an_application_leader_as_run_does(tmp_path, capsys, monkeypatch):
    leader = {"application": "MobileNetV3Small", "weights": "null", "epochs": 1}
    config = load_config(overrides=[f"tune.output_dir={tmp_path / 'tune'}", "data.source.shots=2",
                                    *(f"leader.{key}={value}" for key, value in leader.items())])
    job = TuneJob(config)
    source, _ = load_tasks(config)
    trained = []
    monkeypatch.setattr(keras.Model, "fit", lambda model, *args, **kwargs: trained.append(model.name))  # 40 s
    searched = job.leader(source)
    assert trained == ["leader"]
    assert "training the leader (MobileNetV3Small)" in capsys.readouterr().out
    names = {layer.name for layer in keras_team.load_model(tmp_path / "tune" / "leader.keras").layers}
    assert names == {layer.name for layer in searched.layers}
    assert "fit_images" in names and any(name.startswith("expanded_conv") for name in names)
    best = job.best_config({"cut": "expanded_conv_add", "head_layers": 0, "head_units": None, "dropout": 0.0,
                            "learning_rate": 0.01, "unfreeze": 0, "fine_tune_learning_rate": None})
    # `keras-team run --config best_config.yaml` loads the searched leader instead of building another.
    assert (best.leader.path, best.leader.application) == (str((tmp_path / "tune" / "leader.keras").resolve()), None)
