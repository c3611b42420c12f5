"""`keras-team tune` after a kill, on a foreign or unwritable directory, a taken port, too many workers.

Every refusal is one line with exit status 2, decided before anything is
written or trained; a search replaces only a search, and a killed search
continues on the rerun of the same command.
"""

import errno
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import yaml

from keras_team.app import tune as tune_module
from keras_team.app.cli import main
from keras_team.app.config import load_config
from keras_team.errors import KerasTeamError
from keras_team import zoo
from keras_team.tuning import TransferHyperModel, make_tuner
from keras_team.tuning import hypermodel as hypermodel_module
from tests.test_tuning_cli import TINY, leader_file  # noqa: F401  (the shared trained leader)

SMALL = {**TINY["tune"], "max_trials": 2, "epochs": 2}


def _write_config(path: pathlib.Path, output_dir: pathlib.Path, leader: dict, **tune) -> pathlib.Path:
    path.write_text(yaml.safe_dump({**TINY, "leader": leader, "tune": {**SMALL, **tune, "output_dir": str(output_dir)}}))
    return path


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture()
def untrained_config(tmp_path):
    """A search whose leader is trained by the search itself: a refusal must come before that training."""
    return _write_config(tmp_path / "tune.yaml", tmp_path / "tune", {"architecture": "seed_cnn", "epochs": 1})


@pytest.fixture()
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained before its checks")

    monkeypatch.setattr(tune_module.TuneJob, "leader", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


# --- the output directory -------------------------------------------------------


@pytest.mark.parametrize("kind", ["foreign", "run"])
def test_overwrite_never_replaces_a_foreign_directory_or_a_run(kind, untrained_config, tmp_path, no_training, capsys):
    out = tmp_path / "tune"
    out.mkdir()
    if kind == "run":  # what a finished `keras-team run` leaves
        (out / "state.json").write_text(json.dumps({"config": {}, "stages": {"leader": {}, "evaluate": {}}}))
        (out / "team.keras").write_bytes(b"model")
    else:
        (out / "notes.txt").write_text("mine")
    before = _files(out)
    assert main(["tune", "--config", str(untrained_config), "--overwrite"]) == 2
    what = "a keras-team run" if kind == "run" else "files that are not a keras-team search"
    assert f"holds {what}; a search never replaces those, even with --overwrite" in _one_line_error(capsys)
    assert _files(out) == before


@pytest.mark.parametrize("where, message", [
    ("file", "expected a directory path (this is a file)"),
    ("under_file", "is a file)"),
    ("proc", "expected a directory you may create and write to ("),
    ("read_only", "expected a directory you may create and write to ([Errno 30]"),
])
def test_an_unwritable_output_dir_is_one_line_before_anything_trains(
        where, message, untrained_config, tmp_path, monkeypatch, no_training, capsys):
    out = {"file": tmp_path / "a_file", "under_file": tmp_path / "a_file" / "tune",
           "proc": pathlib.Path("/proc/keras_team_tune"), "read_only": tmp_path / "read_only" / "tune"}[where]
    (tmp_path / "a_file").write_text("x")
    if where == "read_only":  # a read-only file system refuses every new file (also root's) with EROFS
        (tmp_path / "read_only").mkdir()
        real_mkdir = pathlib.Path.mkdir

        def read_only_mkdir(path, *args, **kwargs):
            if str(path).startswith(str(tmp_path / "read_only")):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", read_only_mkdir)
    assert main(["tune", "--config", str(untrained_config), "--output-dir", str(out)]) == 2
    err = _one_line_error(capsys)
    assert f"tune.output_dir='{out}' is not valid" in err and message in err
    if where == "read_only":
        assert "Read-only file system" in err and not out.exists()


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory, leader_file):  # noqa: F811
    """A finished two-trial search on the shared leader (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("finished")
    config = _write_config(root / "tune.yaml", root / "tune", {"path": leader_file})
    assert main(["tune", "--config", str(config)]) == 0
    return root / "tune"


@pytest.fixture()
def old_search(finished_search, tmp_path):
    out = tmp_path / "tune"
    shutil.copytree(finished_search, out)
    return out


@pytest.mark.large
def test_overwrite_refuses_to_delete_the_leader_that_best_config_reads(old_search, finished_search, leader_file, capsys):  # noqa: F811
    shutil.copy(leader_file, old_search / "leader.keras")  # as a search that trained its own leader
    best = yaml.safe_load((old_search / "best_config.yaml").read_text())
    best["leader"]["path"], best["tune"]["output_dir"] = str(old_search / "leader.keras"), str(old_search)
    (old_search / "best_config.yaml").write_text(yaml.safe_dump(best))
    before = _files(old_search)
    assert main(["tune", "--config", str(old_search / "best_config.yaml"), "--overwrite"]) == 2
    err = _one_line_error(capsys)
    assert f"leader.path='{old_search / 'leader.keras'}' is not valid" in err and "would delete it" in err
    assert _files(old_search) == before


@pytest.mark.large
def test_overwrite_keeps_the_old_search_until_the_new_one_passed_its_checks(
        old_search, leader_file, tmp_path, monkeypatch, capsys):  # noqa: F811
    before = _files(old_search)
    rejected = _write_config(tmp_path / "bad.yaml", old_search, {"path": leader_file},
                             space={**SMALL["space"], "cuts": ["fc3"]})
    assert main(["tune", "--config", str(rejected), "--overwrite"]) == 2  # the checks fail: nothing moved
    assert "tune.space.cuts='fc3'" in _one_line_error(capsys)
    assert _files(old_search) == before
    new = _write_config(tmp_path / "new.yaml", old_search, {"path": leader_file}, space={**SMALL["space"], "cuts": ["fc1"]})
    real_tuner = tune_module.TuneJob.tuner
    monkeypatch.setattr(tune_module.TuneJob, "tuner", lambda self, leader: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["tune", "--config", str(new), "--overwrite"]) == 130  # killed before the new search ran a trial
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(".tune.replaced-")]
    assert len(aside) == 1 and _files(aside[0]) == before  # the old search is whole, set aside
    monkeypatch.setattr(tune_module.TuneJob, "tuner", real_tuner)
    assert main(["tune", "--config", str(new), "--overwrite"]) == 0  # the same command continues
    assert not aside[0].exists()  # deleted once the new search ran
    assert {row["cut"] for row in json.loads((old_search / "trials.json").read_text())["trials"]} == {"fc1"}


def test_a_search_that_failed_before_its_first_trial_does_not_refuse_another_config(
        untrained_config, tmp_path, monkeypatch, capsys):
    def fails(self, source):
        raise KerasTeamError("leader", "x", "a leader that trains")

    monkeypatch.setattr(tune_module.TuneJob, "leader", fails)
    assert main(["tune", "--config", str(untrained_config)]) == 2
    assert (tmp_path / "tune" / "tune_state.json").is_file()
    capsys.readouterr()
    assert main(["tune", "--config", str(untrained_config), "--set", "seed=1"]) == 2  # another config: accepted
    assert "leader='x' is not valid" in _one_line_error(capsys)  # it got as far as the leader


# --- workers and the oracle's port ----------------------------------------------


def test_a_taken_oracle_port_is_one_line_and_leaves_no_directory(untrained_config, tmp_path, no_training, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["tune", "--config", str(untrained_config), "--workers", "1", "--set", f"tune.oracle_port={port}"])
    assert code == 2
    err = _one_line_error(capsys)
    assert f"tune.oracle_port={port} is not valid: expected a port free at 127.0.0.1" in err
    assert not (tmp_path / "tune").exists()  # the corrected command finds a new directory


def test_more_workers_than_cores_are_refused_before_any_starts(untrained_config, no_training, capsys):
    assert main(["tune", "--config", str(untrained_config), "--workers", "100000"]) == 2
    cores = len(os.sched_getaffinity(0))
    assert f"--workers=100000 is not valid: expected an int from 0 to {cores}" in _one_line_error(capsys)


# --- kills and torn files --------------------------------------------------------


def test_the_package_s_searches_replace_keras_tuner_state_files_whole(tmp_path):
    """oracle.json and tuner0.json: a new file renamed into place (a kill mid-write leaves the old one)."""
    hypermodel = TransferHyperModel(zoo.seed_cnn((8, 8, 1), 5), 5, cuts=["fc1"])
    tuner = make_tuner(hypermodel, max_trials=1, directory=tmp_path, progress=False)
    tuner.save()
    files = [pathlib.Path(tuner.project_dir) / name for name in ("oracle.json", "tuner0.json")]
    inodes = [path.stat().st_ino for path in files]
    tuner.save()
    assert all(before != path.stat().st_ino for before, path in zip(inodes, files))


def _interrupted_search(config: pathlib.Path, monkeypatch) -> None:
    original, calls = hypermodel_module.TransferHyperModel.fit, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(hypermodel_module.TransferHyperModel, "fit", interrupted)
    assert main(["tune", "--config", str(config)]) == 130
    monkeypatch.setattr(hypermodel_module.TransferHyperModel, "fit", original)


@pytest.mark.large
def test_a_torn_keras_tuner_state_is_set_aside_in_one_line(tmp_path, leader_file, monkeypatch, capsys):  # noqa: F811
    config = _write_config(tmp_path / "tune.yaml", tmp_path / "tune", {"path": leader_file})
    _interrupted_search(config, monkeypatch)
    oracle = tmp_path / "tune" / "search" / "oracle.json"
    oracle.write_text(oracle.read_text()[:40])  # what an in-place write killed halfway leaves
    capsys.readouterr()
    assert main(["tune", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "search/oracle.json: JSONDecodeError is not whole); the search starts again" in printed
    rows = json.loads((tmp_path / "tune" / "trials.json").read_text())["trials"]
    assert [row["status"] for row in rows] == ["COMPLETED", "COMPLETED"]


KILLED_IN_SECOND_TRIAL = """
import os, signal, sys
import keras
from keras_team.tuning import hypermodel
fit, calls = hypermodel.TransferHyperModel.fit, []

class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        os.kill(os.getpid(), signal.SIGKILL)   # mid-trial: after the second trial's first epoch

def killed(self, *args, callbacks=(), **kwargs):
    calls.append(1)
    return fit(self, *args, callbacks=[*callbacks, *([Kill()] if len(calls) == 2 else [])], **kwargs)

hypermodel.TransferHyperModel.fit = killed
from keras_team.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.large
def test_a_search_killed_mid_trial_continues_on_the_same_command(tmp_path, leader_file, capsys):  # noqa: F811
    config = _write_config(tmp_path / "tune.yaml", tmp_path / "tune", {"path": leader_file})
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_SECOND_TRIAL, "tune", "--config", str(config)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    out = tmp_path / "tune"
    for path in out.rglob("*.json"):
        if not path.name.startswith(".tmp-"):
            json.loads(path.read_text())  # nothing the rerun reads is torn
    first = json.loads((out / "search" / "trial_0" / "keras_team_trial.json").read_text())
    assert main(["tune", "--config", str(config)]) == 0
    assert "resuming the search" in capsys.readouterr().out
    rows = json.loads((out / "trials.json").read_text())["trials"]
    assert [row["status"] for row in rows] == ["COMPLETED", "COMPLETED"]
    assert rows[0]["seconds"] == first["seconds"]  # the finished trial was not run again
    assert not [p for p in out.rglob(".tmp-*")]  # a killed writer's leftovers are gone


@pytest.mark.large
def test_a_full_disk_stops_the_search_at_once_and_the_rerun_continues(tmp_path, leader_file, monkeypatch, capsys):  # noqa: F811
    from keras_team.tuning import whole_state

    config = _write_config(tmp_path / "tune.yaml", tmp_path / "tune", {"path": leader_file})
    monkeypatch.setattr(whole_state.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OSError) as raised:  # the CLI prints it in one line
        tune_module.TuneJob(load_config(config)).run()
    assert raised.value.errno == errno.ENOSPC and "bytes needed, 1,000 free" in str(raised.value)
    assert raised.value.filename == str(tmp_path / "tune" / "search" / "trial_0")  # names the directory
    assert "trial 0:" not in capsys.readouterr().out  # no retry of the trial on the same full disk
    out = tmp_path / "tune"
    assert not [p for p in out.rglob(".tmp-*")] and not (out / "search" / "trial_0" / "checkpoint.weights.h5").exists()
    monkeypatch.undo()  # space freed
    assert main(["tune", "--config", str(config)]) == 0
    assert [row["status"] for row in json.loads((out / "trials.json").read_text())["trials"]] == ["COMPLETED"] * 2


@pytest.mark.large
def test_a_failed_final_write_keeps_the_trials_and_the_rerun_writes_without_training(
        tmp_path, leader_file, monkeypatch, capsys):  # noqa: F811
    config = _write_config(tmp_path / "tune.yaml", tmp_path / "tune", {"path": leader_file})
    real_write = tune_module.write_text

    def full_disk(path, text):
        if pathlib.Path(path).name == tune_module.BEST:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, text)

    monkeypatch.setattr(tune_module, "write_text", full_disk)
    assert main(["tune", "--config", str(config)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("keras-team:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "its 2 trials are kept" in errors[0]
    assert tune_module.BEST in errors[0]
    trials = sorted((tmp_path / "tune" / "search").glob("trial_*"))
    assert len(trials) == 2 and not (tmp_path / "tune" / tune_module.BEST).exists()
    monkeypatch.setattr(tune_module, "write_text", real_write)

    def no_training(self, *args, **kwargs):
        raise AssertionError("the rerun trained again")

    monkeypatch.setattr(hypermodel_module.TransferHyperModel, "fit", no_training)
    assert main(["tune", "--config", str(config)]) == 0
    assert (tmp_path / "tune" / tune_module.BEST).is_file()
    assert sorted((tmp_path / "tune" / "search").glob("trial_*")) == trials
