"""`keras-team run` on a cluster of two workers on 127.0.0.1 (issue 16): every stage, chief-only writes, a lost
worker as one error, a restart that resumes. The workers run tests/cluster_driver.py, which records the weights
each saves (a non-chief worker saves only into the temporary folder it removes)."""

import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_team.files import load_model
from keras_team.tuning.distributed import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny run with no dropout or augmentation (each replica would draw its own masks) and batches that every
# layout serves alike: 20 target examples in one global batch; 80 source examples in batches of 32.
SETTINGS = ["leader.architecture=seed_cnn", "leader.epochs=1", "transfer.keep=3", "transfer.epochs=3",
            "transfer.head.kind=dense", "transfer.learning_rate=0.003", "transfer.head.dropout=0",
            "transfer.head.hidden=[8]", "followers=[{name: mlp, epochs: 1}]", "baseline.epochs=1",
            "team.epochs=1", "data.target.shots=4", "data.source.shots=20"]
KILLED = 128 + signal.SIGKILL  # the status of `keras-team run` whose run (its child process) was SIGKILLed
MODELS = ("leader.keras", "stages/transfer.keras", "stages/followers.keras", "stages/team.keras", "baseline.keras")


def _start(out, record, fault="none:-:0", workers=None, index=None, tmp=None, settings=SETTINGS, flags=("--quiet",)):
    cluster = ["--workers", workers, "--worker-index", str(index)] if workers else []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO, **({"TMPDIR": str(tmp)} if tmp else {}))
    env.pop("TF_CONFIG", None)
    argv = ["run", *flags, "--output-dir", str(out), *[a for s in settings for a in ("--set", s)], *cluster]
    return subprocess.Popen([sys.executable, "-m", "tests.cluster_driver", str(record), fault, *argv], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cluster(out, tmp_path, name, faults=("none:-:0", "none:-:0"), settings=SETTINGS):
    """Start the two workers and wait for both: their (return code, stderr), records, and seconds between their exits."""
    workers = ",".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    temps = [tmp_path / f"{name}-tmp{i}" for i in range(2)]
    for t in temps:
        t.mkdir()
    records = [tmp_path / f"{name}-{i}.npz" for i in range(2)]
    processes = [_start(out, records[i], faults[i], workers, i, temps[i], settings) for i in range(2)]
    ended = [None, None]
    deadline = time.monotonic() + 500
    while None in ended and time.monotonic() < deadline:
        for i, p in enumerate(processes):
            if ended[i] is None and p.poll() is not None:
                ended[i] = time.monotonic()
        time.sleep(0.2)
    results = []
    for p, temp in zip(processes, temps):
        _, err = p.communicate(timeout=10)
        results.append((p.returncode, err))
        if p.returncode != KILLED:  # a process that ended left nothing in its temporary folder
            assert not list(temp.iterdir()), (p.returncode, list(temp.iterdir()))
    return results, [_load(r) if r.exists() else None for r in records], abs(ended[0] - ended[1])  # SIGKILL: none


def _load(record):
    """name -> the weights of the model saved as name; "restored" -> {stage: the epoch its checkpoint resumed at}."""
    loaded = {"restored": {}}
    with np.load(record) as data:
        for key in data.files:
            name, part = key.split("|")
            if name == "restored":
                loaded["restored"][part] = int(data[key])
            else:
                loaded.setdefault(name, {})[int(part)] = data[key]
    return {name: parts if name == "restored" else [parts[i] for i in sorted(parts)] for name, parts in loaded.items()}


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    results, records, _ = _cluster(tmp / "run", tmp, "whole")
    for code, err in results:
        assert code == 0, err[-3000:]
    return tmp / "run", records


@pytest.mark.large
def test_two_workers_run_every_stage_identically_and_as_one_process_does(cluster_run, tmp_path):
    out, (chief, worker) = cluster_run
    for name in MODELS:  # both workers trained every stage, to the same bits
        assert len(chief[name]) == len(worker[name]) > 0, name
        assert all(np.array_equal(a, b) for a, b in zip(chief[name], worker[name])), name
    # Only the chief wrote the run directory (the worker's temporary folder is checked empty by _cluster).
    assert (out / "report.json").is_file() and (out / "team.keras").is_file()

    one = _start(tmp_path / "one", tmp_path / "one.npz")  # one process, the same global batches
    _, err = one.communicate(timeout=500)
    assert one.returncode == 0, err[-3000:]
    alone = _load(tmp_path / "one.npz")
    for name in MODELS:
        assert all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(chief[name], alone[name])), name


@pytest.mark.large
def test_a_killed_worker_stops_the_other_with_one_line_and_a_restart_resumes(cluster_run, tmp_path):
    out = tmp_path / "run"
    # The chief is SIGKILLed at its 2nd checkpoint of the transfer stage (epoch 2 ends; epoch 1's is committed).
    results, _, seconds = _cluster(out, tmp_path, "killed", faults=("before:transfer:2", "none:-:0"))
    (chief_code, _), (worker_code, worker_err) = results
    assert chief_code == KILLED
    assert worker_code == 2, worker_err[-3000:]
    last = worker_err.strip().splitlines()[-1]
    assert last.startswith("keras-team: error: workers=") and "/task:0" in last and "same command" in last, last
    assert seconds < 60  # TensorFlow's heartbeats: about 10 s, not a hang

    results, (chief, worker), _ = _cluster(out, tmp_path, "restarted")
    for code, err in results:
        assert code == 0, err[-3000:]
    for record in (chief, worker):
        assert "leader.keras" not in record  # the finished stage was not rerun
        assert record["restored"]["transfer"] == 1  # the running one resumed after its last checkpointed epoch
    whole, _ = cluster_run
    for name in MODELS:
        a, b = load_model(whole / name).get_weights(), load_model(out / name).get_weights()
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), name


@pytest.mark.large
def test_the_default_team_trains_on_two_workers(tmp_path):
    """The default config's members (a linear-probe head, the mlp and the two linear probe followers), shorter stages."""
    settings = ["leader.epochs=1", "baseline.epochs=1", "followers.0.epochs=1", "data.source.shots=20"]
    results, (chief, worker), _ = _cluster(tmp_path / "run", tmp_path, "default", settings=settings)
    for code, err in results:
        assert code == 0, err[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(report["members"]) == {"leader", "mlp", "probe", "pooled"}
    stages = report["stages"]
    probes = [stages["transfer"], stages["followers"]["probe"], stages["followers"]["pooled"]]
    assert {figures["replicas"] for figures in probes} == {2}
    assert {figures["l2"] for figures in probes} <= {1e-4, 1e-3, 1e-2, 1e-1}
    # The residual leader's batch norms: statistics of the global batch, so both workers hold the same models
    # (each its own batch share's made the leaders, transfer bodies and baselines differ).
    names = [name for name in chief if name != "restored"]
    assert {"leader.keras", "stages/transfer.keras", "stages/followers/probe.weights.h5"} <= set(names)
    for name in names:
        assert all(np.array_equal(a, b) for a, b in zip(chief[name], worker[name])), name


def _lines_until(stream, phrase, seconds):
    """The lines read from `stream` until one holds `phrase` (or `seconds` pass, or it ends)."""
    lines, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline and select.select([stream], [], [], deadline - time.monotonic())[0]:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if phrase in line:
            break
    return lines


@pytest.mark.large
def test_a_chief_whose_worker_never_starts_stops_at_the_bound_with_one_line(tmp_path):
    chief, worker = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    p = _start(tmp_path / "run", tmp_path / "r.npz", workers=f"{chief},{worker}", index=0,
               flags=("--worker-timeout", "10"))
    try:
        out, err = p.communicate(timeout=240)  # today's main: waits for ever (the test fails here)
    finally:
        p.kill()
    assert p.returncode == 2, err[-3000:]
    assert f"waiting for workers 1 ({worker}) to join the cluster (at most 10 s: --worker-timeout)" in out
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"keras-team: error: workers 1 ({worker}) did not join within 10 s") and \
        "--worker-timeout" in last, last
    assert time.monotonic() - started < 200  # the bound, plus TensorFlow's start (not TensorFlow's own ~55 s bound)
    assert not (tmp_path / "run").exists()


@pytest.mark.large
def test_sigterm_while_the_chief_waits_stops_it_at_once_with_one_line(tmp_path):
    chief, worker = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    p = _start(tmp_path / "run", tmp_path / "r.npz", workers=f"{chief},{worker}", index=0, flags=())
    try:
        lines = _lines_until(p.stdout, "waiting for workers", 180)
        assert lines and "waiting for workers 1" in lines[-1], lines  # it waits, inside the strategy's creation
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == "keras-team: stopped by SIGTERM; run the same command again to resume"
    from keras_team.app.supervisor import silent

    assert silent(chief)  # the run itself (the child process) is gone too: nothing listens on its port
    assert not (tmp_path / "run").exists()


# --- the command line (fast) ------------------------------------------------
@pytest.mark.parametrize("argv, phrase", [
    (["--workers", "127.0.0.1:2222,127.0.0.1:2223"], "--worker-index=None is not valid: expected set together with --workers"),
    (["--workers", "127.0.0.1,127.0.0.1:2223", "--worker-index", "0"], "--workers='127.0.0.1,127.0.0.1:2223'"),
    (["--workers", "127.0.0.1:2222,127.0.0.1:2223", "--worker-index", "2"], "--worker-index=2"),
    (["--workers", "127.0.0.1:{taken},127.0.0.1:2223", "--worker-index", "0"], "expected a port free"),
    (["--workers", "127.0.0.1:2222,127.0.0.1:{free}", "--worker-index", "1", "--strategy", "default"],
     "distribute.strategy='default' is not valid: expected auto or multi_worker"),
    (["--workers", "127.0.0.1:2222,127.0.0.1:{free}", "--worker-index", "1", "--worker-timeout", "0"],
     "--worker-timeout=0.0 is not valid: expected a number of seconds above 0"),
    (["--workers", "127.0.0.1:2222,127.0.0.1:{free}", "--worker-index", "1", "--worker-timeout", "nan"],
     "--worker-timeout=nan is not valid"),
])
def test_cluster_mistakes_are_one_line_before_anything_starts(argv, phrase, tmp_path, monkeypatch, capsys):
    from keras_team.app import cli

    monkeypatch.setenv("TF_CONFIG", "")  # restored after the test: the CLI sets it for its cluster
    with __import__("socket").socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        argv = [a.format(taken=taken.getsockname()[1], free=free_port()) for a in argv]
        assert cli.main(["run", "--output-dir", str(tmp_path / "run"), *argv]) == cli.USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("keras-team: error: ") and err.count("\n") == 1 and phrase in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.large  # builds the plan's models
def test_check_on_a_worker_reports_the_cluster_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from keras_team.app import cli

    monkeypatch.setenv("TF_CONFIG", "")
    workers = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    assert cli.main(["check", "--output-dir", str(tmp_path / "run"), "--workers", workers, "--worker-index", "1"]) == 0
    out = capsys.readouterr().out
    chief, this = workers.split(",")
    assert f"cluster worker 1 of 2 ({chief} chief, {this} this one)" in out
    assert "5. evaluate" in out and f"the chief writes {tmp_path / 'run'}/" in out
    assert not (tmp_path / "run").exists()
