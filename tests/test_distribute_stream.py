"""Data larger than memory: TFDS splits streamed, k-shot and validation on the tf.data pipeline."""

import dataclasses
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_team import data
from keras_team.errors import KerasTeamError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "stream_memory.py"


@pytest.fixture
def generated_cifar100():
    """600 CIFAR-100-shaped examples per split, label = index % 100, generated on the fly."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from stream_memory import _generated
    finally:
        sys.path.remove(str(SCRIPT.parent))
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_generated(600)):
        yield


def _digests(dataset):
    return [hashlib.sha1(image.tobytes()).hexdigest() for x, _ in dataset.as_numpy_iterator() for image in x]


def test_streamed_k_shot_class_subset_and_validation_are_seeded_and_disjoint(generated_cifar100):
    task = data.tfds_stream("cifar100", classes=[7, 3, 50], shots=2, validation=0.5, seed=1, batch_size=4)
    assert task.class_names == ("7", "3", "50") and task.input_shape == (32, 32, 3)
    labels = np.concatenate([y for _, y in task.dataset("train").as_numpy_iterator()])
    assert np.bincount(labels).tolist() == [2, 2, 2]
    train, validation = _digests(task.dataset("train")), _digests(task.dataset("validation"))
    # 6 examples of each class in 600; 2 per class train, about half the other 4 validation.
    assert 3 <= len(validation) <= 9 and not set(train) & set(validation)
    assert _digests(task.dataset("train")) == train  # one seeded pass: the same every time
    again = data.tfds_stream("cifar100", classes=[7, 3, 50], shots=2, validation=0.5, seed=2, batch_size=4)
    assert _digests(again.dataset("train")) != train
    test_labels = np.concatenate([y for _, y in task.dataset("test").as_numpy_iterator()])
    assert np.bincount(test_labels).tolist() == [6, 6, 6]


def test_streamed_without_shots_splits_every_example_once(generated_cifar100):
    task = data.tfds_stream("cifar100", validation=0.2, seed=0, batch_size=50)
    train, validation = _digests(task.dataset("train")), _digests(task.dataset("validation"))
    assert len(train) + len(validation) == 600 and not set(train) & set(validation)
    assert 60 <= len(validation) <= 180
    with pytest.raises(KerasTeamError, match="shots"):
        data.tfds_stream("cifar100", shots=0)


@pytest.mark.large
def test_streamed_task_peak_memory_stays_under_half_a_split():
    examples = 20000  # 61 MB of pixels per split; the cap is half of one split
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--examples", str(examples), "--mode", "streamed", "--print"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))
    assert result["examples_served"]["test"] == examples  # the whole split went through
    assert result["examples_served"]["train"] == 5 * 100
    assert result["peak_bytes_above_start"] < result["dataset_bytes_per_split"] / 2, result


class _TwoReplicas:
    num_replicas_in_sync = 2


def test_streamed_and_in_memory_tasks_serve_the_same_global_batches_under_a_strategy(generated_cifar100,
                                                                                     monkeypatch):
    streamed = data.tfds_stream("cifar100", classes=range(7), shots=1, batch_size=6)
    x, y = np.zeros((7, 32, 32, 3), np.uint8), np.arange(7, dtype=np.int32)
    in_memory = data.Task("toy", {"train": (x, y)}, streamed.class_names, batch_size=6)
    monkeypatch.setattr(data.tf.distribute, "get_strategy", lambda: _TwoReplicas())
    sizes = [[len(y) for _, y in task.dataset("train").as_numpy_iterator()] for task in (streamed, in_memory)]
    # 7 examples on 2 replicas: batches of 6 would leave one replica nothing of the last example.
    assert sizes == [[4, 3], [4, 3]]
    for task in (dataclasses.replace(streamed, batch_size=5), dataclasses.replace(in_memory, batch_size=5)):
        with pytest.raises(KerasTeamError, match="multiple of the 2 replicas") as error:
            task.dataset("train")
        assert error.value.field == "batch_size"  # the argument of the core function, not a config path


def test_stream_errors_name_the_functions_own_arguments(tmp_path):
    with pytest.raises(KerasTeamError) as error:
        data.tfds_stream("no_such_dataset_xyz")
    assert error.value.field == "name"
    with pytest.raises(KerasTeamError) as error:
        data.tfds_stream("cifar100", data_dir=str(tmp_path)).dataset("train")  # nothing prepared there
    assert error.value.field == "data_dir"
