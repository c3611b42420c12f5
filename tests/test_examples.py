"""The scripts of examples/ run, each on tiny settings (their own flags), in a scratch directory."""

import os
import pathlib
import subprocess
import sys

import pytest

from keras_team.tuning.distributed import free_port
from tests.test_docs import make_images

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    return env


def _run(script, *args, cwd):
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_example_is_listed_and_documents_itself():
    listed = (EXAMPLES / "README.md").read_text()
    for script in EXAMPLES.glob("*.py"):
        assert f"`{script.name}`" in listed, script.name
        assert script.read_text().startswith('"""'), script.name


@pytest.mark.large
def test_own_folder_exports_a_verified_team(tmp_path):
    make_images(tmp_path / "my_images")
    out = _run("own_folder.py", "my_images", "--weights", "none", "--epochs", "1", "--output", "exports",
               cwd=tmp_path)
    assert "parity passed: True" in out
    assert (tmp_path / "exports" / "serving" / "team" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "exports" / "team.tflite").exists()


@pytest.mark.large
def test_tune_cut_searches_and_saves_the_winner(tmp_path):
    out = _run("tune_cut.py", "--trials", "2", "--epochs", "2", "--leader-epochs", "1", "--output", "tune",
               cwd=tmp_path)
    assert "best:" in out and (tmp_path / "tune" / "trials.csv").exists()
    assert (tmp_path / "tune" / "best.keras").exists()


@pytest.mark.large
def test_two_leaders_and_a_distilling_follower(tmp_path):
    out = _run("two_leaders_distill.py", "--leader-epochs", "1", "--epochs", "2", "--output", "team.keras",
               cwd=tmp_path)
    assert "student" in out and "ensemble test accuracy" in out
    assert (tmp_path / "team.keras").exists()


@pytest.mark.large
def test_multi_worker_on_two_local_workers(tmp_path):
    workers = ",".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    processes = [subprocess.Popen([sys.executable, str(EXAMPLES / "multi_worker.py"), "--workers", workers,
                                   "--index", str(i), "--epochs", "2", "--output", "run"],
                                  cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    try:
        results = [p.communicate(timeout=400) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(processes, results):
        assert p.returncode == 0, err[-3000:]
    assert (tmp_path / "run" / "team.keras").exists()
