"""keras_team.files: every writer's atomic file and directory, the one model loader."""

import os
import warnings

import keras
import numpy as np
import pytest

import keras_team
from keras_team import files, transfers
from keras_team.errors import KerasTeamError


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_files_respect_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        files.write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode


def test_writes_are_synced_before_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), replace(a, b))[1])
    files.write_text(tmp_path / "a.txt", "x")
    assert events[:2] == ["fsync", "replace"] and (tmp_path / "a.txt").read_text() == "x"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(OSError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_directory_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "serving" / "1"
    with pytest.raises(RuntimeError):
        with files.atomic_dir(target) as building:
            (building / "saved_model.pb").write_bytes(b"graph")
            raise RuntimeError("killed mid-export")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with files.atomic_dir(target) as building:
        (building / "saved_model.pb").write_bytes(b"v1")
    with files.atomic_dir(target, replace=True) as building:
        (building / "saved_model.pb").write_bytes(b"v2")
    assert (target / "saved_model.pb").read_bytes() == b"v2" and [p.name for p in target.parent.iterdir()] == ["1"]


def test_what_a_killed_writer_left_is_recognised_and_removed(tmp_path):
    tmp = tmp_path / f"{files.TEMPORARY_PREFIX}0123abcd-team.keras"
    tmp.write_bytes(b"half a model")
    (tmp_path / "team.keras").write_bytes(b"whole")
    assert files.remove_temporaries(tmp_path) == [tmp]
    assert [p.name for p in tmp_path.iterdir()] == ["team.keras"]


@pytest.mark.parametrize("content, says", [
    (None, "no such file"),
    (b"junk", "not a .keras archive"),
])
def test_load_model_says_what_is_wrong_with_the_file_and_the_app_names_its_field(tmp_path, content, says):
    path = tmp_path / "leader.keras"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KerasTeamError, match=says) as caught:
        keras_team.load_model(path)
    assert caught.value.field == "filepath"
    with pytest.raises(KerasTeamError, match=says) as caught:
        keras_team.load_model(path, field="leader.path")
    assert caught.value.field == "leader.path"


class Doubled(keras.layers.Layer):  # registered with no one: a user's own layer
    def call(self, x):
        return 2 * x


def test_load_model_takes_keras_arguments_and_keeps_keras_errors(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, Doubled()(inputs))
    model.compile("adam", "mse")
    model.save(tmp_path / "own.keras")
    with pytest.raises(TypeError, match="Doubled"):  # Keras' own error, not hidden
        keras_team.load_model(tmp_path / "own.keras")
    loaded = keras_team.load_model(tmp_path / "own.keras", custom_objects={"Doubled": Doubled}, compile=False)
    assert not loaded.compiled and float(loaded(np.ones((1, 3)))[0, 0]) == 2.0
    with pytest.raises(KerasTeamError, match="Keras can rebuild") as caught:  # the app: a user's file, on its field
        keras_team.load_model(tmp_path / "own.keras", field="leader.path")
    assert isinstance(caught.value.__cause__, TypeError)


def test_a_bug_in_the_package_is_not_reported_as_a_bad_file(tmp_path, monkeypatch):
    model = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=1, head=keras_team.heads.dense(3))
    model.save(tmp_path / "transferred.keras")

    def broken(model):
        raise TypeError("a bug")

    monkeypatch.setattr(transfers, "refreeze", broken)  # called by Transferred.from_config
    with pytest.raises(TypeError, match="could not be deserialized"):
        keras_team.load_model(tmp_path / "transferred.keras", field="leader.path")


def test_evaluate_loads_the_run_without_keras_optimizer_warning(tmp_path, capsys):
    """A run's team compiled with an optimizer never built (its heads fitted elsewhere, as the probe does):
    `keras-team evaluate` prints no "Skipping variable loading for optimizer". The app never resumes an
    optimizer from a model file (a stage resumes from its backup), so its loader reads models with compile=False."""
    from keras_team.app import cli

    keras.utils.set_random_seed(0)
    assert cli.main(["init", str(tmp_path / "config.yaml")]) == 0
    leader = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 10), keep=3, head=keras_team.heads.dense(10))
    team = keras_team.Team(leader)
    team.compile()
    team.save(tmp_path / "team.keras")
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["evaluate", str(tmp_path)]) == 0
    messages = [str(w.message) for w in caught] + [capsys.readouterr().err]
    assert not any("Skipping variable loading" in m for m in messages), messages


def test_the_documented_names_are_exported():
    from keras_team.transferability import CutScore

    assert {"CutScore", "files", "load_model"} <= set(keras_team.__all__)
    assert keras_team.CutScore is CutScore and keras_team.files is files
