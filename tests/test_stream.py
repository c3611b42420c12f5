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


@pytest.fixture
def pets(tmp_path):
    """The same folder as a task in memory and streamed (k-shot: a few images each)."""
    root = write_folder(tmp_path / "pets", per_class=12)
    options = dict(shots=3, seed=1, batch_size=4)
    return root, data.load_task(str(root), stream=False, **options), data.load_task(str(root), stream=True, **options)


@pytest.mark.large  # 3 s: a leader's cuts predicted on both tasks
def test_imprinting_and_the_cut_advisor_read_a_streamed_task_as_the_same_task_in_memory(pets):
    import keras

    import keras_team
    from keras_team import heads
    from keras_team.app import recipe

    _, held, streamed = pets
    keras.utils.set_random_seed(0)
    leader = keras_team.zoo.seed_cnn(held.input_shape, 3)
    kernels = []
    for task in (held, streamed):
        student = heads.imprint(keras_team.transfer(leader, keep="pool1", head=heads.cosine(3)),
                                *data.examples(task, ["train"]))
        kernels.append(np.asarray(student.head.layers[-1].kernel))
    assert np.array_equal(*kernels)
    (x, y), (xv, yv) = held.splits["train"], held.splits["validation"]
    in_memory = keras_team.rank_cuts(leader, np.concatenate([x, xv]), np.concatenate([y, yv]))  # the arrays, as before
    for task in (held, streamed):
        chosen, ranking = recipe.rank_keep(leader, task)
        scores = {s.cut.name: s.score for s in ranking}
        assert scores == {s.cut.name: s.score for s in in_memory if s.cut.name in scores}, task
    assert "_splits" not in vars(streamed) and "splits" not in vars(streamed)  # never decoded whole


@pytest.mark.large  # 2 s: the validation images decoded through tf.data
def test_a_search_on_a_streamed_folder_streams_it_or_reads_the_same_arrays_within_the_budget(pets, capsys, monkeypatch):
    from keras_team.app.config import load_config
    from keras_team.app.tune import TuneJob

    root, held, streamed = pets

    def search_data(task, stream):
        job = TuneJob(load_config(overrides=[f"data.target.name={root}", f"data.stream={stream}",
                                             "tune.validation_per_class=1", "tune.space.top_k_cuts=1"]))
        return job, *job.data(task)

    job, (x, y), (xv, yv), sizes = search_data(held, "false")
    assert not job.streamed and (sizes["validation_examples"], sizes["validation_available"]) == (len(yv), 4) == (3, 4)
    assert np.array_equal(job.rank_data[0], np.concatenate([x, xv]))
    job, (xs, ys), (xvs, yvs), _ = search_data(streamed, "auto")  # 3 KB of images: read into memory
    assert not job.streamed and "read into memory for the feature cache" in capsys.readouterr().out
    assert np.array_equal(xs, x) and np.array_equal(xvs, xv) and np.array_equal(yvs, yv)
    job, (train, none), validation, _ = search_data(streamed, "true")
    assert job.streamed and none is None and "feature cache needs arrays, so it is OFF" in capsys.readouterr().out
    served = [np.concatenate(part) for part in zip(*validation.as_numpy_iterator())]
    assert np.array_equal(served[0], xv) and np.array_equal(served[1], yv)
    ranked = np.concatenate(list(job.rank_data[0].as_numpy_iterator()))
    assert np.array_equal(ranked, np.concatenate([x, xv])) and np.array_equal(job.rank_data[1], np.concatenate([y, yv]))
    monkeypatch.setattr("keras_team.data.memory_budget", lambda: 10)  # auto: over the budget, streamed
    assert search_data(streamed, "auto")[0].streamed
