"""A killed run resumes: stage checkpoints are written whole or not at all, a torn one is set aside,
a full disk is one line (`keras_team.checkpoints`, issue 18).

The fast tests drive the checkpoint callback itself; the large ones SIGKILL a
`keras-team run` subprocess (tests/crash_driver.py) and rerun it.
"""

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_team import checkpoints
from keras_team.files import load_model
from tests.helpers import same_weights, weights_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the callback ----------------------------------------------------------
class Interrupt(keras.callbacks.Callback):
    """Stands in for a kill at the end of epoch `epoch` (after the checkpoint of that epoch)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("killed")


def _model():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.3), keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype("float32"), rng.integers(0, 3, 40)
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(40, seed=1).batch(16)  # 3 batches, reshuffled


def _fit(backup, epochs=6, *, stop=None, every_seconds=0):
    """A seeded fit from `backup`, its data one repeated stream skipped to the restored epoch (as the recipe does)."""
    model = _model()
    checkpoint = checkpoints.BackupAndRestore(backup, every_seconds=every_seconds)
    start = checkpoint.restore(model)
    callbacks = [checkpoint] + ([Interrupt(stop)] if stop is not None else [])
    with pytest.raises(RuntimeError, match="killed") if stop is not None else contextlib.nullcontext():
        model.fit(_data().repeat().skip(start * 3), steps_per_epoch=3, epochs=epochs, callbacks=callbacks, verbose=0,
                  shuffle=False)
    return model, start


def _metadata(backup):
    return json.loads((backup / checkpoints.METADATA).read_text())


def test_resumed_fit_gives_the_weights_of_an_uninterrupted_one(tmp_path):
    whole, _ = _fit(tmp_path / "whole")
    _fit(tmp_path / "b", stop=2)
    assert _metadata(tmp_path / "b")["epoch"] == 3
    resumed, start = _fit(tmp_path / "b")
    assert start == 3
    assert same_weights(weights_of(whole), weights_of(resumed))  # dropout masks and shuffles included
    assert not (tmp_path / "b").exists()  # a finished fit deletes its checkpoint


def test_a_kill_during_a_write_leaves_the_last_committed_checkpoint(tmp_path):
    """What a SIGKILL can leave: a half-written temporary, or new weights whose metadata was never written."""
    backup = tmp_path / "b"
    _fit(backup, stop=1)
    committed = _metadata(backup)
    model = _model()
    model.optimizer.build(model.trainable_variables)
    model.load_weights(backup / committed["weights"])
    expected = weights_of(model)
    (backup / ".tmp-0123abcd-epoch-3.weights.h5").write_bytes(b"\x89HDF\r\n half")
    (backup / "epoch-3.weights.h5").write_bytes((backup / committed["weights"]).read_bytes())

    model = _model()
    assert checkpoints.BackupAndRestore(backup).restore(model) == 2
    assert same_weights(weights_of(model), expected)
    assert sorted(p.name for p in backup.iterdir()) == sorted([checkpoints.METADATA, committed["weights"]])


@pytest.mark.parametrize("damage", ["garbage weights", "truncated weights", "metadata not json", "keras' own layout"])
def test_an_unreadable_checkpoint_is_set_aside_with_a_warning(tmp_path, damage):
    backup = tmp_path / "b"
    _fit(backup, stop=1)
    weights = backup / _metadata(backup)["weights"]
    if damage == "garbage weights":
        weights.write_bytes(b"x" * weights.stat().st_size)
    elif damage == "truncated weights":
        os.truncate(weights, weights.stat().st_size // 2)
    elif damage == "metadata not json":
        (backup / checkpoints.METADATA).write_text('{"epoch": 2, "wei')
    else:  # what keras.callbacks.BackupAndRestore leaves when killed while rewriting its file in place
        weights.rename(backup / "latest.weights.h5")
        os.truncate(backup / "latest.weights.h5", 1000)
        (backup / checkpoints.METADATA).write_text('{"epoch": 2, "batch": 0}')
    model, fresh = _model(), weights_of(_model())
    said = []
    assert checkpoints.BackupAndRestore(backup, warn=said.append).restore(model) == 0
    assert same_weights(weights_of(model), fresh)  # nothing half-loaded: the fit starts from its own weights
    assert not backup.exists()
    (aside,) = tmp_path.glob("b.unreadable-*")
    assert len(said) == 1 and "\n" not in said[0]
    assert f"the checkpoint in {backup} cannot be read" in said[0] and str(aside) in said[0]
    assert "restarted this fit from its first epoch" in said[0]


def test_a_full_disk_keeps_the_last_checkpoint_and_says_so_in_one_line(tmp_path, monkeypatch):
    backup = tmp_path / "b"
    whole, _ = _fit(tmp_path / "whole")
    original = keras.Model.save_weights
    writes = []

    def half_then_full(self, filepath, *args, **kwargs):
        writes.append(filepath)
        if len(writes) == 3:
            original(self, filepath, *args, **kwargs)
            os.truncate(filepath, os.path.getsize(filepath) // 2)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
        return original(self, filepath, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save_weights", half_then_full)
        with pytest.raises(OSError) as error:
            _fit(backup)
    assert error.value.errno == errno.ENOSPC and os.path.dirname(error.value.filename) == str(backup)
    assert re.search(r"at least [\d,]+ bytes needed", error.value.strerror)  # what the CLI's one line says
    assert _metadata(backup)["epoch"] == 2
    assert sorted(p.name for p in backup.iterdir()) == ["epoch-2.weights.h5", checkpoints.METADATA]
    resumed, start = _fit(backup)  # space freed: the same fit continues
    assert start == 2 and same_weights(weights_of(whole), weights_of(resumed))


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=10))
    with pytest.raises(OSError, match=r"No space left on device; at least [\d,]+ bytes needed") as error:
        _fit(tmp_path / "b")
    assert error.value.errno == errno.ENOSPC
    assert not list((tmp_path / "b").glob("*.h5"))


def test_checkpoints_are_written_by_time_not_every_epoch(tmp_path):
    backup = tmp_path / "b"
    _fit(backup, stop=4, every_seconds=3600)
    assert not backup.exists() or not any(backup.iterdir())  # nothing yet: an hour has not passed


# --- a real kill of `keras-team run` ---------------------------------------
SETTINGS = ["leader.epochs=1", "transfer.epochs=5", "followers=[{name: mlp, epochs: 3}]", "transfer.head.kind=dense",
            "transfer.learning_rate=0.003", "baseline.epochs=3",
            "transfer.head.hidden=[8]", "data.target.shots=3"]
COMPARED = ("leader.keras", "stages/transfer.keras", "stages/followers.keras", "baseline.keras", "team.keras")


def _run(output_dir, fault="none:-:0", *extra):
    argv = ["run", "--quiet", "--output-dir", str(output_dir), *[a for s in [*SETTINGS, *extra] for a in ("--set", s)]]
    return subprocess.run([sys.executable, "-m", "tests.crash_driver", fault, *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def _same_models(a, b):
    for name in COMPARED:
        assert same_weights(weights_of(load_model(a / name)), weights_of(load_model(b / name))), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    done = _run(out)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.large
def test_killed_at_any_point_of_a_stage_the_rerun_ends_with_the_uninterrupted_weights(uninterrupted, tmp_path):
    out = tmp_path / "run"
    for fault in ("torn:transfer:2", "written:follower_mlp:1", "before:baseline:2"):
        killed = _run(out, fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr)
    done = _run(out)
    assert done.returncode == 0, done.stderr
    _same_models(uninterrupted, out)
    for stage, epochs in (("transfer", 5), ("follower_mlp", 3), ("baseline", 3)):  # each epoch logged once
        rows = (out / "logs" / f"{stage}.csv").read_text().splitlines()[1:]
        assert [row.split(",")[0] for row in rows] == [str(e) for e in range(epochs)], stage


@pytest.mark.large
def test_a_torn_checkpoint_is_set_aside_and_overwrite_replaces_the_run(uninterrupted, tmp_path):
    out = tmp_path / "run"
    assert _run(out, "before:transfer:3").returncode == -signal.SIGKILL
    backup = out / "backup" / "transfer"
    for leftover in backup.iterdir():  # what Keras' own callback leaves when killed mid-write
        leftover.unlink()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 500)
    (backup / checkpoints.METADATA).write_text('{"epoch": 2, "batch": 0}')
    done = _run(out, "none:-:0", "overwrite=true")
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "cannot be read" in line]  # also with --quiet
    assert line.startswith("warning: the checkpoint in") and "restarted this fit from its first epoch" in line
    assert len(list((out / "backup").glob("transfer.unreadable-*"))) == 1
    _same_models(uninterrupted, out)


@pytest.mark.large
def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_rerun_continues(uninterrupted, tmp_path):
    out = tmp_path / "run"
    full = _run(out, "full:transfer:3")
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr, full.stderr
    last = full.stderr.strip().splitlines()[-1]  # (TensorFlow's start-up lines come before)
    assert last.startswith(f"keras-team: error: out of space in {out / 'backup' / 'transfer'} ") and "bytes needed" in last
    assert json.loads((out / "backup" / "transfer" / checkpoints.METADATA).read_text())["epoch"] == 2
    done = _run(out)
    assert done.returncode == 0, done.stderr
    _same_models(uninterrupted, out)
