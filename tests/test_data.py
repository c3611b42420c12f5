"""Tests of keras_team.data: splits, k-shot sampling, pipelines, errors, TFDS."""

import pathlib
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_team import data
from keras_team.errors import KerasTeamError

MOCK_EXAMPLES = 1500  # per split; random cifar100 labels give >= 8 per class


def rows(x):
    return {r.tobytes() for r in x.reshape(len(x), -1)}


def batches(ds):
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def pair():
    return data.digits_tasks(shots=10, seed=0)


def test_digits_images_are_uint8_and_labels_remapped(pair):
    source, target = pair
    assert target.class_names == ("5", "6", "7", "8", "9")
    assert source.class_names == ("0", "1", "2", "3", "4")
    assert target.input_shape == (8, 8, 1) and target.num_classes == 5
    for task in pair:
        for x, y in task.splits.values():
            assert x.dtype == np.uint8 and x.shape[1:] == (8, 8, 1)
            assert y.dtype == np.int32 and set(np.unique(y)) == set(range(5))
    assert source.splits["train"][0].max() == 255  # 16 -> 255


def test_target_train_has_exactly_shots_per_class(pair):
    _, target = pair
    assert np.bincount(target.splits["train"][1]).tolist() == [10] * 5


def test_splits_are_stratified_and_disjoint(pair):
    source, target = pair
    for task in pair:
        train, val, test = (rows(task.splits[s][0]) for s in data.SPLITS)
        assert not (train & val or train & test or val & test)
    test_counts = np.bincount(source.splits["test"][1])
    totals = sum(np.bincount(source.splits[s][1]) for s in data.SPLITS)
    assert np.all(np.abs(test_counts - 0.3 * totals) <= 1)


def test_seed_fixes_the_splits():
    a, b, c = (data.digits(classes=[5, 6], shots=3, seed=s) for s in (1, 1, 2))
    for split in data.SPLITS:
        assert np.array_equal(a.splits[split][0], b.splits[split][0])
        assert np.array_equal(a.splits[split][1], b.splits[split][1])
    assert not np.array_equal(a.splits["train"][0], c.splits["train"][0])
    assert not np.array_equal(a.splits["test"][0], c.splits["test"][0])


def test_augmentation_only_in_training():
    plain = data.digits(classes=[0, 1, 2], batch_size=16)
    augmented = data.digits(classes=[0, 1, 2], batch_size=16, augment=("flip", "crop"))
    for split in data.SPLITS:  # never shuffled nor augmented, epoch after epoch
        ds = augmented.dataset(split)
        first, second = batches(ds), batches(ds)
        for got in (first, second):
            assert np.array_equal(got[0], augmented.splits[split][0])
            assert np.array_equal(got[1], augmented.splits[split][1])
    raw_x, raw_y = batches(plain.dataset("train", training=True))
    train = augmented.dataset("train", training=True)
    assert train.element_spec[0].shape.as_list() == [None, 8, 8, 1]
    epoch1, epoch2 = batches(train), batches(train)
    assert np.array_equal(epoch1[1], raw_y)  # same seeded shuffle order
    assert epoch1[0].dtype == np.uint8 and epoch1[0].shape == raw_x.shape
    assert not np.array_equal(epoch1[0], raw_x)
    assert not np.array_equal(epoch1[0], epoch2[0])


def test_crop_pads_and_crops_back_to_size():
    x = np.full((8, 6, 6, 3), 255, np.uint8)
    task = data.Task("ones", {"train": (x, np.zeros(8, np.int32))}, ("a",), augment=("crop",))
    (images, _), = task.dataset("train", training=True)
    assert images.shape == (8, 6, 6, 3)
    assert set(np.unique(images)) <= {0, 255}  # a shifted crop, no resampling
    assert (images.numpy() == 0).any()


def test_shift_moves_each_image_by_at_most_an_eighth_of_a_side_with_mirrored_borders():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 16, 24, 3)).astype(np.uint8)
    task = data.Task("noise", {"train": (x, np.arange(16, dtype=np.int32))}, ("a",), augment=("shift",), batch_size=16)
    (images, labels), = task.dataset("train", training=True)
    padded = np.pad(x, ((0, 0), (2, 2), (3, 3), (0, 0)), mode="reflect")  # 16 // 8, 24 // 8; numpy's reference
    shifts = set()
    for image, label in zip(images.numpy(), labels.numpy()):
        found = [(dy, dx) for dy in range(5) for dx in range(7)
                 if np.array_equal(image, padded[label, dy:dy + 16, dx:dx + 24])]
        assert found, "every view is a shifted copy of its own image"
        shifts.add(found[0])
    assert len(shifts) > 1  # random shifts, not one


def test_from_dataset_and_load_task_match_from_arrays():
    x = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    y = np.arange(40) % 4
    kwargs = dict(classes=[2, 0], shots=3, validation=0.25, test=0.25, seed=5)
    direct = data.from_arrays(x, y, **kwargs)
    via_ds = data.from_dataset(tf.data.Dataset.from_tensor_slices((x, y)), **kwargs)
    assert direct.class_names == via_ds.class_names == ("2", "0")
    for split in data.SPLITS:
        assert np.array_equal(direct.splits[split][0], via_ds.splits[split][0])
    assert data.load_task("digits", classes=[7, 3]).class_names == ("7", "3")


@pytest.mark.parametrize(
    "make, field, words",
    [
        (lambda: data.digits(classes=[3, 12]), "classes", "available classes: 0, 1, 2"),
        (lambda: data.digits(classes=[5], shots=1000), "shots", "class '5' has the fewest"),
        (lambda: data.digits(shots=0), "shots", ">= 1"),
        (lambda: data.digits(validation=0.0), "validation", "between 0 and 1"),
        (lambda: data.digits(test=1.5), "test", "between 0 and 1"),
        (lambda: data.digits(augment=("rotate",)), "augment", "'flip', 'crop', 'shift'"),
        (lambda: data.digits().dataset("dev"), "split", "'test', 'train'"),
        (lambda: data.digits().dataset("test", training=True), "split", "'train'"),
        (lambda: data.from_arrays(np.zeros((10, 2)), np.zeros(9, int)), "y", "one per"),
    ],
)
def test_user_errors_name_the_field(make, field, words):
    with pytest.raises(KerasTeamError, match=field) as caught:
        make()
    assert caught.value.field == field and words in str(caught.value)


class DownloadReached(Exception):
    """Raised instead of the network call."""


def test_tfds_download_path_gets_as_far_as_the_network(tmp_path, monkeypatch):
    """The README's CIFAR command with download=true: on a clean install tfds needed importlib_resources.

    Defined before `mock_tfds`, whose mock stays on for the rest of the module.
    """
    def network(self, *args, **kwargs):
        raise DownloadReached

    monkeypatch.setattr(tfds.download.DownloadManager, "download", network)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", network)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])  # as if online
    with pytest.raises(KerasTeamError, match="tfds build cifar10") as caught:  # one line, naming how to prepare it
        data.tfds_task("cifar10", data_dir=str(tmp_path), download=True)
    assert caught.value.field == "download" and isinstance(caught.value.__cause__, DownloadReached)


def test_tfds_not_downloaded_is_one_line_up_front_without_the_network(tmp_path, monkeypatch):
    """Offline, a dataset missing from data_dir once ended in minutes of retries and a connection traceback."""
    def network(self, *args, **kwargs):
        raise AssertionError("the network was reached")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", network)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", network)
    for load in (data.tfds_task, lambda *a, **k: data.tfds_stream(*a, **k).dataset("train"), data.load_task):
        with pytest.raises(KerasTeamError) as caught:
            load("cifar10", data_dir=str(tmp_path))
        assert caught.value.field == "data_dir" and str(tmp_path) in str(caught.value.value)
        assert "not downloaded" in str(caught.value) and "tfds build cifar10 --data_dir" in str(caught.value)

    def offline(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)  # no name resolves: the machine is offline
    with pytest.raises(KerasTeamError, match="cannot be looked up") as caught:
        data.tfds_task("cifar10", data_dir=str(tmp_path), download=True)
    assert caught.value.field == "download" and "tfds build cifar10" in str(caught.value)


@pytest.mark.parametrize("load", [data.tfds_task, data.tfds_stream])
@pytest.mark.parametrize("kwargs, field", [({"classes": [10]}, "classes"), ({"shots": 0}, "shots"),
                                           ({"validation": 1.5}, "validation")])
def test_both_tfds_sources_check_classes_and_shots_alike_before_anything_downloads(load, kwargs, field, tmp_path,
                                                                                   monkeypatch):
    def network(self, *args, **kwargs):
        raise DownloadReached

    monkeypatch.setattr(tfds.download.DownloadManager, "download", network)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", network)
    with pytest.raises(KerasTeamError) as caught:
        load("cifar10", data_dir=str(tmp_path), download=True, **kwargs)
    assert caught.value.field == field


@pytest.fixture(scope="module")
def mock_tfds(tmp_path_factory):
    """Mocked cifar10/cifar100 with known split sizes; nothing downloads.

    `batch_size=-1` batches by the recorded split sizes; the code-only mock
    records none and TF aborts on the fallback batch of sys.maxsize. So
    write metadata files with `MOCK_EXAMPLES` per split and mock from them.
    """
    root = tmp_path_factory.mktemp("tfds")
    for name in ("cifar10", "cifar100"):
        builder = tfds.builder(name, data_dir=root)
        builder.info.set_splits(tfds.core.SplitDict([
            tfds.core.SplitInfo(name=s, shard_lengths=[MOCK_EXAMPLES], num_bytes=0)
            for s in ("train", "test")
        ]))
        pathlib.Path(builder.data_dir).mkdir(parents=True)
        builder.info.write_to_directory(builder.data_dir)
    with tfds.testing.mock_data(
        num_examples=MOCK_EXAMPLES, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(root)
    ):
        yield


def test_tfds_cifar10_source_with_augmentation(mock_tfds):
    source = data.tfds_task("cifar10", augment=("flip", "crop"), batch_size=64, data_dir="/nowhere")
    assert source.num_classes == 10 and source.input_shape == (32, 32, 3)
    x_train, _ = source.splits["train"]
    assert len(x_train) + len(source.splits["validation"][0]) == MOCK_EXAMPLES
    assert len(source.splits["test"][0]) == MOCK_EXAMPLES
    images, labels = next(iter(source.dataset("train", training=True)))
    assert images.dtype == tf.uint8 and images.shape == (64, 32, 32, 3)
    assert labels.dtype == tf.int32


def test_tfds_cifar100_target_k_shot(mock_tfds):
    target = data.tfds_task("cifar100", shots=2, seed=1)
    assert target.num_classes == 100
    assert np.bincount(target.splits["train"][1], minlength=100).tolist() == [2] * 100
    subset = data.load_task("cifar100", classes=[5, 6, 7], shots=2)
    assert subset.class_names == ("5", "6", "7")
    assert sorted(set(subset.splits["test"][1])) == [0, 1, 2]


def test_unknown_tfds_name(mock_tfds):
    with pytest.raises(KerasTeamError, match="no_such_dataset_xyz") as caught:
        data.tfds_task("no_such_dataset_xyz")
    assert caught.value.field == "name"


@pytest.mark.parametrize("shots", [121, 122, 500])
def test_too_many_shots_names_the_smallest_class_and_a_limit_that_works(shots):
    whole = data.digits(classes=range(5, 10))  # without shots, train + validation is the pool shots come from
    counts = np.bincount(whole.splits["train"][1]) + np.bincount(whole.splits["validation"][1])
    with pytest.raises(KerasTeamError) as caught:
        data.digits(classes=range(5, 10), shots=shots)
    error = caught.value
    assert error.field == "shots"  # not `validation`, which the user did not set
    smallest = str(5 + int(np.argmin(counts)))
    assert f"class {smallest!r} has the fewest training examples ({min(counts)})" in str(error)
    limit = int(str(error).split("at most ")[1].split(":")[0])
    assert limit < min(counts)
    task = data.digits(classes=range(5, 10), shots=limit)  # following the advice works ...
    assert set(np.unique(task.splits["validation"][1])) == set(range(5))  # ... and validates every class
    with pytest.raises(KerasTeamError):
        data.digits(classes=range(5, 10), shots=limit + 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_inputs_are_refused(bad):
    x = np.ones((40, 3), np.float32)
    x[7, 1] = bad
    y = np.arange(40) % 2
    with pytest.raises(KerasTeamError, match="1 NaN or infinite") as caught:
        data.from_arrays(x, y)
    assert caught.value.field == "x"
