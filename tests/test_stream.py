"""Larger than memory: a folder of images streamed (decoded as served) is the task it would be in memory."""

import numpy as np
import pytest

from keras_team import data
from tests.test_user_data import write_folder


def _served(task, split, **kwargs):
    return [np.concatenate(part) for part in zip(*task.dataset(split, **kwargs).as_numpy_iterator())]


@pytest.mark.large  # 2 s: tf.data decoding and augmentation traced
def test_a_streamed_folder_serves_the_files_and_pixels_of_the_task_in_memory(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=12)
    options = dict(classes=["fox", "cat"], shots=3, seed=2, batch_size=4, augment=("flip",))
    held = data.load_task(str(root), stream=False, **options)
    streamed = data.load_task(str(root), stream=True, **options)
    assert isinstance(streamed, data.FileTask) and streamed.files["train"][0].dtype.kind == "U"  # names, no pixels
    assert (streamed.class_names, streamed.input_shape) == (held.class_names, held.input_shape)
    for split in data.SPLITS:
        x, y = _served(streamed, split)
        assert np.array_equal(y, held.labels(split)) and np.array_equal(x, held.images(split))
    x, y = _served(streamed, "train", training=True)  # shuffled and flipped, the same images
    assert np.all(x[..., 0].max(axis=(1, 2)) // 60 == np.where(y == 0, 2, 0))  # each image still its folder's


def test_stream_auto_streams_a_folder_larger_than_the_memory_budget(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pets")
    assert isinstance(data.load_task(str(root), stream="auto"), data.Task)
    monkeypatch.setattr(data, "memory_budget", lambda: 36 * 10 * 12 * 3 - 1)  # one byte short of its pixels
    assert isinstance(data.load_task(str(root), stream="auto"), data.FileTask)


@pytest.mark.large  # 3 s: a mocked TFDS set passed over
def test_a_tfds_set_streams_with_labels_and_training_only_augmentation(tmp_path):
    import sys

    import tensorflow_datasets as tfds

    sys.path.insert(0, "benchmarks")
    try:
        from stream_memory import _generated
    finally:
        sys.path.remove("benchmarks")
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_generated(300)):
        task = data.load_task("cifar100", classes=[3, 1], shots=2, stream=True, augment=("crop",), batch_size=4)
        assert isinstance(task, data.StreamTask) and np.bincount(task.labels("train")).tolist() == [2, 2]
        x, y = _served(task, "test")
        assert np.array_equal(y, task.labels("test")) and len(y) == 6  # 300 examples, label = index % 100
        assert np.array_equal(x, task.images("test"))  # evaluation: neither shuffled nor augmented
        x, _ = _served(task, "train", training=True)
        assert x.shape == (4, 32, 32, 3)
