"""The core on JAX (fast) and on JAX and PyTorch (large), in subprocesses; the CLI on TensorFlow only."""

import os
import pathlib
import subprocess
import sys

import pytest

from keras_team.app import cli

ROOT = pathlib.Path(__file__).parent.parent


def run_driver(backend: str, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "tests.backend_driver", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_tap_cache_feature_cache_and_refusals_on_jax():
    done = run_driver("jax")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "ok jax"


@pytest.mark.large
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_team_predict_and_search_on_another_backend(backend):
    done = run_driver(backend, "--all")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == f"ok {backend}"


def test_the_command_line_refuses_another_backend_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert cli.main(["check"]) == 2
    assert capsys.readouterr().err == (
        "keras-team: error: KERAS_BACKEND='jax' is not valid: expected tensorflow, the backend the command line "
        "runs on (unset KERAS_BACKEND or set KERAS_BACKEND=tensorflow)\n")
