"""Strategies, mixed precision, XLA and the multi-worker route (keras_team.distribute)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_team import distribute
from keras_team.errors import KerasTeamError
from tests.distribute_common import make_team, team_data

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _result(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


def _python(*args: str) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, timeout: float = 240) -> dict:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return _result(out)


def _close(a, b, **tolerance) -> bool:
    return len(a) == len(b) and all(np.allclose(x, y, **tolerance) for x, y in zip(a, b))


def test_unknown_strategy_and_precision_are_clear_errors():
    with pytest.raises(KerasTeamError, match="strategy.*auto, default, mirrored"):
        distribute.choose_strategy("tpu")
    with pytest.MonkeyPatch.context() as patch, pytest.raises(KerasTeamError, match="TF_CONFIG"):
        patch.delenv("TF_CONFIG", raising=False)
        distribute.choose_strategy("multi_worker")
    with pytest.raises(KerasTeamError, match="precision.*mixed_float16"):
        with distribute.precision("float8"):
            pass


class _TwoReplicas:
    num_replicas_in_sync = 2


def test_global_batch_size_is_a_multiple_of_the_replicas_that_leaves_no_replica_empty(monkeypatch):
    assert distribute.global_batch_size(32, 15) == 32  # one device: as given
    monkeypatch.setattr(distribute.tf.distribute, "get_strategy", lambda: _TwoReplicas())
    assert distribute.global_batch_size(32, 15) == 12  # 15 = 12 + 3: both replicas get some of the last batch
    assert distribute.global_batch_size(32, 64) == 32
    assert distribute.global_batch_size(32) == 32  # a stream of unknown length: checked only
    with pytest.raises(KerasTeamError) as error:
        distribute.global_batch_size(5, 15)
    assert error.value.field == "batch_size"


def test_auto_is_the_default_strategy_without_several_gpus():
    assert distribute.choose_strategy("auto").num_replicas_in_sync == 1


@pytest.mark.large
def test_mirrored_on_two_logical_cpus_matches_one_device_and_runs_every_recipe_stage(tmp_path):
    # The default team (residual leader with batch norms, linear-probe head, mlp, probe and pooled followers), short stages;
    # 15 target examples, an odd number: every replica must still get a share of each batch.
    short = ["leader.epochs=1", "baseline.epochs=1", "followers.0.epochs=1", "team.epochs=1",
             "data.source.shots=20", "data.target.shots=3"]
    runs = {}
    for name in ("mirrored", "default"):
        cli_args = ["run", "--quiet", "--strategy", name, "--output-dir", str(tmp_path / name),
                    *[a for s in short for a in ("--set", s)]]
        result = _finish(_python("-m", "tests.distribute_mirrored", *cli_args), timeout=600)
        runs[name] = json.loads((tmp_path / name / "state.json").read_text())["stages"]

    default, mirrored = result["default"], result["mirrored"]
    assert (default["replicas"], mirrored["replicas"]) == (1, 2)
    assert not _close(default["weights"], make_team().get_weights())  # it trained
    assert _close(default["weights"], mirrored["weights"], rtol=1e-4, atol=1e-5)
    assert np.allclose(default["loss"], mirrored["loss"], rtol=1e-4)

    stages = runs["mirrored"]
    replicas = {stage: stages[stage]["replicas"] for stage in ["leader", "transfer", "team", "baseline"]}
    replicas.update({f"follower {f}": stages["followers"][f]["replicas"] for f in ("mlp", "probe", "pooled")})
    assert set(replicas.values()) == {2}, replicas
    assert (tmp_path / "mirrored" / "team.keras").is_file()
    # The linear probe on the same features: the same chosen strength and, per strength, nearly the same best
    # validation log-loss. Float reduction order, enlarged by Adam's normalised steps near convergence, moved a
    # stopping epoch by one (measured: 7 vs 8 at L2 0.01; 0.01907 vs 0.01900 at L2 1e-4 after 30 epochs).
    probes = result["probe"]
    one_device, two = probes["default"]["scores"], probes["mirrored"]["scores"]
    assert probes["mirrored"]["l2"] == probes["default"]["l2"], (one_device, two)
    assert one_device.keys() == two.keys() and all(abs(one_device[k][0] - two[k][0]) <= 0.01 for k in two), (
        one_device, two)
    # The whole run: the residual leader's batch norms see the global batch (synchronized), so what is left is
    # float reduction order, measured at 1.7e-4 relative on the leader's validation log-loss; a probe on its
    # features may stop one epoch apart on that (measured: epoch 7 vs 6, log-loss 0.682 vs 0.660).
    one = runs["default"]
    assert np.isclose(stages["leader"]["val_loss"], one["leader"]["val_loss"], rtol=1e-3)
    pairs = [(stages["transfer"], one["transfer"])] + [(stages["followers"][f], one["followers"][f]) for f in ("probe", "pooled")]
    for a, b in pairs:
        assert a["l2"] == b["l2"] and np.isclose(a["val_loss"], b["val_loss"], rtol=0.1), (a, b)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_team_trains_with_float32_outputs(policy):
    train, _ = team_data()
    with distribute.precision(policy):
        team = make_team()
    assert keras.config.dtype_policy().name == "float32"  # restored after the block
    assert team.leaders["leader"].body.get_layer("conv1").compute_dtype == policy.removeprefix("mixed_")
    history = team.fit(train, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    outputs = team.predict(train, verbose=0)
    assert {str(out.dtype) for out in outputs.values()} == {"float32"}
    assert all(np.isfinite(out).all() for out in outputs.values())


@pytest.mark.large  # XLA compiles the team's training step
def test_jit_compiled_team_fit_matches_the_uncompiled_one():
    train, _ = team_data()
    plain, jitted = make_team(), make_team(jit_compile=True)
    plain.fit(train, epochs=2, verbose=0, shuffle=False)
    jitted.fit(train, epochs=2, verbose=0, shuffle=False)
    assert jitted.jit_compile is True
    assert _close(plain.get_weights(), jitted.get_weights(), rtol=1e-3, atol=1e-4)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _cluster(out_dir: pathlib.Path, epochs: int) -> list[dict]:
    workers = ",".join(f"127.0.0.1:{port}" for port in _free_ports(2))
    processes = [_python("-m", "tests.distribute_worker", workers, str(i), str(out_dir), str(epochs)) for i in range(2)]
    return [_finish(p) for p in processes]


@pytest.mark.large
def test_two_workers_train_identically_chief_writes_and_a_restart_resumes(tmp_path):
    first = _cluster(tmp_path, epochs=4)
    assert first[0]["epochs"] == first[1]["epochs"] == [0, 1, 2, 3]
    # No eager all-reduce per epoch (resetting Keras' metrics outside a replica made 20 an epoch).
    assert all(worker["eager_reductions"] < 4 for worker in first), first
    assert _close(first[0]["weights"], first[1]["weights"], rtol=0, atol=0)
    assert "val_loss" in first[0]["logs"] and "leader_loss" in first[0]["logs"]
    # Only the chief wrote: its CSV log and checkpoints, nothing else.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "log.csv"]
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 1 + 4

    resumed = _cluster(tmp_path, epochs=5)  # both restart: the epochs done are skipped
    assert resumed[0]["epochs"] == resumed[1]["epochs"] == [4]
    assert _close(resumed[0]["weights"], resumed[1]["weights"], rtol=0, atol=0)

    # Independent reference: one process, plain model.fit on the global batches, 5 epochs.
    train, validation = team_data()
    reference = make_team()
    scored = reference.fit(train, validation_data=validation, epochs=5, verbose=0, shuffle=False).history
    assert _close(resumed[0]["weights"], reference.get_weights(), rtol=1e-4, atol=1e-5)
    for worker in resumed:  # each worker scored the whole validation split, not a share of it
        assert np.isclose(worker["logs"]["val_loss"][-1], scored["val_loss"][-1], rtol=1e-4), (worker["logs"], scored)


def test_steps_per_execution_is_at_most_the_steps_of_an_epoch():
    # An absurd setting hung the first stage: more steps per call than an epoch has change nothing.
    assert distribute.steps_per_execution(10**9, 28) == 28
    assert distribute.steps_per_execution(4, 28) == 4


def test_steps_per_execution_auto_is_one_under_a_strategy_where_more_is_refused():
    assert distribute.steps_per_execution("auto", 625) == 10  # many small steps, one device: 10 per call
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():  # Keras' multi-step loop fails under MirroredStrategy
        assert distribute.steps_per_execution("auto", 625) == 1
        with pytest.raises(KerasTeamError, match="steps_per_execution=10 is not valid: expected 1 or auto"):
            distribute.steps_per_execution(10, 625)


def test_the_multi_worker_loop_counts_an_epoch_of_a_dataset_of_unknown_length_and_refuses_an_endless_one():
    # The loop runs an epoch's steps in one call, so it needs their number: TensorFlow's count, else one pass.
    assert distribute._batches(tf.data.Dataset.range(10).batch(4)) == 3
    assert distribute._batches(tf.data.Dataset.range(10).filter(lambda x: x % 2 == 0).batch(2)) == 3
    with pytest.raises(KerasTeamError, match="steps_per_epoch=None is not valid: expected a number of batches per epoch for an endless"):
        distribute._batches(tf.data.Dataset.range(10).repeat().batch(2))
