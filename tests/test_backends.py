"""The core on JAX and PyTorch (large: a subprocess importing a second framework costs seconds); the CLI on TensorFlow only."""

import os
import pathlib
import subprocess
import sys

import pytest

from keras_team.app import cli

ROOT = pathlib.Path(__file__).parent.parent


def run_driver(backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "tests.backend_driver"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.large
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_team_predict_and_search_on_another_backend(backend):
    """The tap cache's fit, the tuner's feature cache, the refusals, the Team's fit/save/load, predict, a search."""
    done = run_driver(backend)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == f"ok {backend}"


def test_the_command_line_refuses_another_backend_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert cli.main(["check"]) == 2
    assert capsys.readouterr().err == (
        "keras-team: error: KERAS_BACKEND='jax' is not valid: expected tensorflow, the backend the command line "
        "runs on (unset KERAS_BACKEND or set KERAS_BACKEND=tensorflow)\n")
