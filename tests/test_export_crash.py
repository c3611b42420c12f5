"""Kills and refused writes: an export or a follower cache killed midway, a full disk, a read-only directory.

After a kill nothing half-written is read as good: TF Serving finds no
version it could load half-written, `export_report.json` says "passed" only
for artefacts that are there whole, and the rerun of the same command
removes what was left (saying so) and finishes.
"""

import errno
import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_team import Follower, Team, caching, zoo
from keras_team.app import cli
from keras_team.app.export import export_model
from keras_team.errors import KerasTeamError
from keras_team.export import litert
from keras_team.files import TEMPORARY_PREFIX

CONFIG = "data:\n  target: {shots: 5}\n"
# TF Serving's test of a version directory name: strtoll of the whole name (spaces and a sign allowed).
TF_SERVING_VERSION = re.compile(r"\s*[+-]?\d+\s*")


def _error_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith("keras-team: error: ") and err.count("\n") == 1, err
    return err


def _loadable_versions(model_dir: pathlib.Path) -> list[str]:
    return [p.name for p in model_dir.iterdir() if TF_SERVING_VERSION.fullmatch(p.name)] if model_dir.is_dir() else []


def _leftovers(root: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in root.rglob(f"{TEMPORARY_PREFIX}*")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as `keras-team run` leaves it (an untrained team is enough to export)."""
    path = tmp_path_factory.mktemp("run")
    (path / "config.yaml").write_text(CONFIG)
    keras.utils.set_random_seed(0)
    Team({"leader": zoo.seed_cnn((8, 8, 1), 5, name="leader")}, [Follower(zoo.mlp(5), name="mlp")]).save(path / "team.keras")
    return path


def _failing_conversion(monkeypatch, fail_on="int8"):
    original = litert._convert

    def convert(saved_model_dir, keys, quantization, *rest):
        if quantization == fail_on:
            raise litert.ConverterError("the converter refused the model")
        return original(saved_model_dir, keys, quantization, *rest)

    monkeypatch.setattr(litert, "_convert", convert)


@pytest.mark.large  # an export round trip
def test_a_failed_conversion_publishes_the_others_verified_and_reports_it(run_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "export"
    argv = ["export", str(run_dir), "--output-dir", str(out), "--formats", "saved_model,tflite,tflite-int8"]
    assert cli.main(argv[:-1] + ["saved_model,tflite-float16"]) == 0
    _failing_conversion(monkeypatch)
    assert cli.main(argv + ["--force"]) == cli.EXPORT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("keras-team: export failed: artefact tflite-int8") and err.count("\n") == 1
    assert "the converter refused the model" in err
    report = json.loads((out / "export_report.json").read_text())  # this export's, the failed artefact included
    assert [(fmt, entry["passed"]) for fmt, entry in report["artefacts"].items()] == [
        ("saved_model", True), ("tflite-float32", True), ("tflite-int8", False)]
    assert "the converter refused the model" in report["artefacts"]["tflite-int8"]["misses"][0]
    assert sorted(_loadable_versions(out / "serving" / "team")) == ["1", "2"]  # the earlier one and this one, verified
    assert (out / "litert" / "team.float32.tflite").is_file() and (out / "litert" / "team.float16.tflite").is_file()
    assert not (out / "litert" / "team.int8.tflite").exists() and not _leftovers(out)


@pytest.mark.large  # an export round trip
def test_an_artefact_that_misses_its_tolerance_is_not_published(run_dir, tmp_path):
    model = keras.models.load_model(run_dir / "team.keras")
    x = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 1)).astype("uint8")
    with pytest.raises(KerasTeamError, match="artefact tflite-int8"):
        export_model(model, tmp_path, name="team", formats=["saved_model", "tflite-int8"], train_examples=x,
                     examples=x, verified_on="random", tolerances={"tflite-int8": {"max_abs_diff": 0.0}})
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["artefacts"]["saved_model"]["passed"] and not report["artefacts"]["tflite-int8"]["passed"]
    assert _loadable_versions(tmp_path / "serving" / "team") == ["1"]
    assert not (tmp_path / "litert" / "team.int8.tflite").exists() and not _leftovers(tmp_path)


KILLED_EXPORT = """
import os, signal, sys
from keras_team.app import cli
from keras_team.export import litert

original = litert._convert
def convert(saved_model_dir, keys, quantization, *rest):
    if quantization == "float16":  # the SavedModel and the float32 file are written by now
        os.kill(os.getpid(), signal.SIGKILL)
    return original(saved_model_dir, keys, quantization, *rest)
litert._convert = convert
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.large
def test_an_export_killed_mid_conversion_leaves_nothing_loadable_and_the_rerun_finishes(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    argv = ["export", str(run_dir), "--output-dir", str(out), "--formats", "saved_model,tflite,tflite-float16", "--version", "1"]
    killed = subprocess.run([sys.executable, "-c", KILLED_EXPORT, *argv], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _leftovers(out)  # the half-done export, under a name nothing reads
    assert _loadable_versions(out / "serving" / "team") == []
    assert not (out / "export_report.json").exists() and not (out / "litert" / "team.float32.tflite").exists()

    assert cli.main(argv) == 0  # the same command
    said = capsys.readouterr().out
    assert said.startswith("keras-team: removed what an interrupted export left unpublished") and said.count("removed") == 1
    report = json.loads((out / "export_report.json").read_text())
    assert report["passed"] and all(pathlib.Path(entry["path"]).exists() for entry in report["artefacts"].values())
    assert _loadable_versions(out / "serving" / "team") == ["1"] and not _leftovers(out)


def _cache_team():
    keras.utils.set_random_seed(0)
    return Team(zoo.seed_cnn((8, 8, 1), 3), [Follower(zoo.mlp(3), tap="features")])


def _dataset(n=12):
    x = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 1)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, np.arange(n) % 3)).batch(4)


def _whole(directory: pathlib.Path) -> bool:
    """Every tap file holds exactly the rows `labels.npy` says (features are 84 float32s a row)."""
    rows = len(np.load(directory / "labels.npy"))
    files = [path for path in directory.glob("*.bin") if not path.name.startswith(TEMPORARY_PREFIX)]
    return bool(files) and all(path.stat().st_size == rows * 84 * 4 for path in files)


def test_a_cache_write_that_fails_midway_leaves_no_half_file(tmp_path, monkeypatch):
    team, data = _cache_team(), _dataset()
    expected = caching.cache_taps(team, "mlp", data, verbose=0).inputs["leader_features"]
    monkeypatch.setattr(caching, "CACHE_BATCH", 4)
    original, calls = caching._Store.add, []

    def add_then_fail(store, outputs, labels):
        original(store, outputs, labels)
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(caching._Store, "add", add_then_fail)
    with pytest.raises(OSError, match="Input/output error"):
        caching.cache_taps(team, "mlp", data, directory=tmp_path, verbose=0)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(caching._Store, "add", original)
    inputs, labels = caching.cache_taps(team, "mlp", data, directory=tmp_path, verbose=0)
    np.testing.assert_allclose(inputs["leader_features"], expected, rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.npy", "leader_features.bin"]


KILLED_CACHE = """
import os, signal, sys
import numpy as np
import tensorflow as tf
from keras_team import caching
sys.path.insert(0, {tests!r})
from test_export_crash import _cache_team, _dataset

team = _cache_team()
caching.cache_taps(team, "mlp", _dataset(8), directory=sys.argv[1], verbose=0)  # a whole cache of 8 rows
caching.CACHE_BATCH = 4
original, calls = caching._Store.add, []
def add_then_die(store, outputs, labels):
    original(store, outputs, labels)
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
caching._Store.add = add_then_die
caching.cache_taps(team, "mlp", _dataset(12), directory=sys.argv[1], verbose=0)
"""


@pytest.mark.large
def test_a_cache_killed_mid_write_is_never_read_half(tmp_path):
    script = KILLED_CACHE.format(tests=str(pathlib.Path(__file__).parent))
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _whole(tmp_path)  # the earlier cache, whole; the new one only in temporaries
    inputs, labels = caching.cache_taps(_cache_team(), "mlp", _dataset(12), directory=tmp_path, verbose=0)
    assert len(labels) == 12 and _whole(tmp_path) and not _leftovers(tmp_path)


def test_a_read_only_output_dir_is_one_line_before_any_work(run_dir, monkeypatch, capsys):
    def read_only(path, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(pathlib.Path, "write_bytes", read_only)
    assert cli.main(["export", str(run_dir), "--formats", "tflite"]) == cli.USER_ERROR
    assert "--output-dir=" in (line := _error_line(capsys)) and "Read-only file system" in line


@pytest.mark.large  # an export round trip
def test_a_full_disk_on_one_litert_file_keeps_the_verified_artefacts(run_dir, tmp_path, monkeypatch, capsys):
    write_bytes = pathlib.Path.write_bytes

    def full_for_float32(path, data):  # the disk fills up while the float32 LiteRT file is written
        if path.name.endswith(".float32.tflite"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write_bytes(path, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_for_float32)
    out = tmp_path / "export"
    argv = ["export", str(run_dir), "--output-dir", str(out), "--formats", "saved_model,tflite,tflite-float16"]
    assert cli.main(argv) == cli.EXPORT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keras-team: export failed: artefact tflite-float32 (disk)=")
    assert re.search(r"No space left on device; [\d,]+ bytes needed", err) and "team.float32.tflite" in err, err
    assert _loadable_versions(out / "serving" / "team") == ["1"]  # verified before the full disk: published
    assert (out / "litert" / "team.float16.tflite").is_file() and (out / "litert" / "team.float16.labels.txt").is_file()
    assert not (out / "litert" / "team.float32.tflite").exists() and not _leftovers(out)
    report = json.loads((out / "export_report.json").read_text())["artefacts"]
    assert report["saved_model"]["passed"] and report["tflite-float16"]["passed"]
    assert not report["tflite-float32"]["passed"] and "No space left" in report["tflite-float32"]["misses"][0]


def test_a_refused_write_of_another_kind_is_not_hidden(monkeypatch):
    def broken(args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cli, "_check", broken)
    with pytest.raises(OSError, match="Input/output error"):
        cli.main(["check"])
