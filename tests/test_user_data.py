"""A user's own data: a .npz file or a folder of class subfolders of images is a task."""

import numpy as np
import pytest
from PIL import Image

import keras_team
from keras_team import data
from keras_team.errors import KerasTeamError


def write_folder(root, classes=("cat", "dog", "fox"), per_class=12, size=(10, 12), mode="RGB"):
    """Images whose class is their brightness, so the pixels say which folder they came from."""
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            value = 60 * label + i
            colour = value if mode == "L" else (value, value, value)
            Image.new(mode, size[::-1], colour).save(root / name / f"{i}.png")
    return root


def test_a_folder_is_a_task_named_by_its_class_folders(tmp_path):
    task = data.load_task(str(write_folder(tmp_path / "pets")), shots=4, seed=1)
    assert task.class_names == ("cat", "dog", "fox") and task.input_shape == (10, 12, 3)
    x, y = task.splits["train"]
    assert x.dtype == np.uint8 and np.bincount(y).tolist() == [4, 4, 4]
    assert np.all(x[..., 0].max(axis=(1, 2)) // 60 == y)  # each image is labelled by its own folder
    assert sum(len(task.splits[s][1]) for s in ("train", "validation", "test")) <= 36


def test_classes_by_folder_name_in_the_order_given(tmp_path):
    task = data.load_task(str(write_folder(tmp_path / "pets")), classes=["fox", "cat"])
    assert task.class_names == ("fox", "cat")
    x, y = task.splits["train"]
    assert np.all(x[y == 0][..., 0] >= 120) and np.all(x[y == 1][..., 0] < 60)


def test_train_and_test_subfolders_are_the_splits(tmp_path):
    write_folder(tmp_path / "set" / "train", per_class=10)
    write_folder(tmp_path / "set" / "test", per_class=3)
    task = data.from_folder(tmp_path / "set")
    assert len(task.splits["test"][1]) == 9 and len(task.splits["train"][1]) + len(task.splits["validation"][1]) == 30


@pytest.mark.parametrize("stream", [False, True])
def test_a_validation_subfolder_is_the_validation_split(tmp_path, stream):
    """train/, validation/ and test/: shots come from train/, validation is all of validation/ (its classes selected)."""
    write_folder(tmp_path / "set" / "train", per_class=10)
    write_folder(tmp_path / "set" / "validation", classes=("cat", "dog", "fox"), per_class=5, size=(10, 12))
    for name in ("cat", "dog", "fox"):  # validation images are told apart by their blue channel
        for file in (tmp_path / "set" / "validation" / name).iterdir():
            Image.new("RGB", (12, 10), (0, 0, 255)).save(file)
    write_folder(tmp_path / "set" / "test", per_class=3)
    task = data.from_folder(tmp_path / "set", shots=2, classes=["dog", "fox"], stream=stream)
    x_val, y_val = task.splits["validation"]
    assert np.bincount(y_val).tolist() == [5, 5] and len(task.splits["train"][1]) == 4
    if not stream:
        assert np.all(x_val[..., 2] == 255) and not np.any(task.splits["train"][0][..., 2] == 255)


def test_images_of_other_sizes_and_modes_are_brought_to_the_common_one(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=8)
    Image.new("L", (20, 30), 7).save(root / "cat" / "odd.png")
    task = data.from_folder(root)
    shapes = {x.shape[1:] for x, _ in task.splits.values()}
    assert shapes == {(10, 12, 3)}


def test_grey_folders_read_as_one_channel(tmp_path):
    task = data.from_folder(write_folder(tmp_path / "g", mode="L"))
    assert task.input_shape == (10, 12, 1)


@pytest.mark.parametrize("make, says", [
    (lambda root: root.mkdir(), "no subfolders"),
    (lambda root: (write_folder(root), (root / "empty").mkdir()), "empty"),
    (lambda root: (write_folder(root), (root / "dog" / "3.png").write_bytes(b"not a png")), "3.png"),
])
def test_bad_folders_are_one_clear_error_naming_what(tmp_path, make, says):
    root = tmp_path / "pets"
    make(root)
    with pytest.raises(KerasTeamError, match="is not valid") as caught:
        data.load_task(str(root))
    assert says in str(caught.value.value) + caught.value.allowed


def test_a_npz_with_string_labels_and_its_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "arrays.npz"
    np.savez(path, x=rng.integers(0, 255, (30, 4, 4, 1), dtype=np.uint8), y=np.array(["b", "a", "c"] * 10),
             x_test=np.zeros((6, 4, 4, 1), np.uint8), y_test=np.array(["a", "b", "c"] * 2))
    task = data.load_task(str(path), classes=["c", "a"])
    assert task.class_names == ("c", "a") and len(task.splits["test"][1]) == 4


def test_a_npz_with_class_names(tmp_path):
    path = tmp_path / "arrays.npz"
    np.savez(path, x=np.zeros((40, 3)), y=np.arange(40) % 2, class_names=np.array(["no", "yes"]))
    assert data.load_task(str(path)).class_names == ("no", "yes")


@pytest.mark.parametrize("arrays, says", [
    ({"x": np.zeros((4, 2))}, "holds x"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(3, int)}, "one per example"),
    ({"x": np.zeros((40, 2)), "y": np.arange(40) % 2, "class_names": np.array(["only"])}, "0..0"),
])
def test_bad_npz_files_are_one_clear_error(tmp_path, arrays, says):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(KerasTeamError) as caught:
        data.load_task(str(path))
    assert says in str(caught.value)


def test_a_corrupt_npz_and_a_missing_path(tmp_path):
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(KerasTeamError, match="readable .npz"):
        data.load_task(str(tmp_path / "torn.npz"))
    with pytest.raises(KerasTeamError, match="no such file or folder"):
        data.load_task(str(tmp_path / "nowhere" / "x.npz"))


def test_classes_absent_from_the_file_list_what_there_is(tmp_path):
    with pytest.raises(KerasTeamError, match="cat.*dog.*fox"):
        data.load_task(str(write_folder(tmp_path / "pets")), classes=["wolf"])


def test_the_report_scores_each_class_by_its_name(tmp_path):
    import keras

    import keras_team
    from keras_team.app.report import evaluate_team

    task = data.from_folder(write_folder(tmp_path / "pets"), seed=0)
    keras.utils.set_random_seed(0)
    leader = keras_team.transfer(keras_team.zoo.seed_cnn(task.input_shape, 3), keep=2, head=keras_team.heads.dense(3))
    team = keras_team.Team({"leader": leader}, [])
    report = evaluate_team(team, task)
    confusion = np.array(report["ensemble"]["confusion_matrix"])
    assert report["class_names"] == ["cat", "dog", "fox"]
    assert confusion.sum(axis=1).tolist() == np.bincount(task.splits["test"][1], minlength=3).tolist()
    per_class = report["ensemble"]["test_accuracy_per_class"]
    assert list(per_class) == ["cat", "dog", "fox"]
    assert np.isclose(np.dot(list(per_class.values()), confusion.sum(axis=1)) / confusion.sum(),
                      report["ensemble"]["test_accuracy"])


@pytest.mark.large
def test_keras_team_run_on_a_folder_reports_its_class_names(tmp_path, capsys, monkeypatch):
    from keras_team.app import cli

    passes, cache_passes = [], keras_team.caching._cache_passes

    def counted(compute, keys, dataset, **kwargs):
        if kwargs["what"].startswith("follower"):  # not the transfer stage's cache of its frozen part
            passes.append((kwargs["what"], kwargs["views"], kwargs["directory"] is not None))
        return cache_passes(compute, keys, dataset, **kwargs)

    monkeypatch.setattr(keras_team.caching, "_cache_passes", counted)
    root = write_folder(tmp_path / "pets", classes=("ant", "bee", "cat", "dog"), per_class=14)
    out = tmp_path / "run"
    code = cli.main(["run", "--quiet", "--output-dir", str(out), "--set", f"data.source.name={root}",
                     "--set", "data.source.classes=[ant,bee]", "--set", f"data.target.name={root}",
                     "--set", "data.target.classes=[dog,cat]", "--set", "data.target.shots=3",
                     "--set", "data.stream=true",  # decoded as served, the tap cache and evaluation included
                     "--set", "followers.0.tap=[stem_relu,block1_out]",  # multi-scale: two cuts inside the body
                     *[arg for field in ("leader", "transfer", "followers.0", "baseline")
                       for arg in ("--set", f"{field}.epochs=2")]])
    assert code == 0, capsys.readouterr().err
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["class_names"] == ["dog", "cat"] and (out / "confusion.png").is_file()
    assert not (out / "taps").exists()  # the streamed task's tap cache, on disk while the follower trained
    # The three followers' taps (mlp's two cuts, the probes' features): one pass over each split for all of them,
    # on disk (memory-mapped) as the task is streamed, removed when the followers are done
    shared = "followers mlp, probe, pooled"
    assert passes == [(shared, 1, True), (shared, 1, True)], passes
    assert not (out / "shared_taps").exists()
    assert sorted(report["ensemble"]["test_accuracy_per_class"]) == ["cat", "dog"]
    assert "| dog " in (out / "report.md").read_text()


def _npz(path, x, y, **arrays):
    np.savez(path, x=x, y=y, **arrays)
    return str(path)


def test_an_empty_train_split_is_one_error_from_the_loaders_and_the_cli(tmp_path, capsys):
    from keras_team.app import cli

    empty = _npz(tmp_path / "empty.npz", np.zeros((0, 8, 8, 1), np.uint8), np.zeros(0, np.int64),
                 x_test=np.zeros((10, 8, 8, 1), np.uint8), y_test=np.arange(10) % 2)
    with pytest.raises(KerasTeamError, match="no training examples") as caught:
        data.load_task(empty)
    assert caught.value.field == "name" and caught.value.value == empty  # not `validation`, which the user did not set
    with pytest.raises(KerasTeamError, match="no training examples") as caught:
        data.Task("t", {"train": (np.zeros((0, 2)), np.zeros(0, np.int32))}, ("a", "b"))
    assert caught.value.field == "x"
    for command in ("run", "check"):
        assert cli.main([command, "--output-dir", str(tmp_path / "run"), "--set", f"data.target.name={empty}",
                         "--set", "data.target.classes=null"]) == 2
        err = capsys.readouterr().err.strip()
        assert "data.target.name=" in err and "no training examples" in err and "Traceback" not in err


def test_non_finite_inputs_name_the_split_and_the_file_not_the_learning_rate(tmp_path, capsys):
    from keras_team.app import cli

    x = np.ones((20, 2), np.float32)
    with pytest.raises(KerasTeamError, match="in the validation split") as caught:
        data.Task("t", {"train": (x, np.arange(20) % 2), "validation": (x * np.nan, np.arange(20) % 2)}, ("a", "b"))
    assert caught.value.field == "x"
    images = np.ones((60, 8, 8, 1), np.float32)
    images[3, 2, 2] = np.inf
    bad = _npz(tmp_path / "bad.npz", images, np.arange(60) % 2)
    assert cli.main(["check", "--output-dir", str(tmp_path / "run"), "--set", f"data.target.name={bad}",
                     "--set", "data.target.classes=null"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.target.name=" in err and "bad.npz" in err and "NaN or infinite" in err
    assert "learning_rate" not in err and "Traceback" not in err


def test_a_folder_of_many_classes_with_two_images_each_names_the_data_not_an_internal_test_fraction(tmp_path, capsys):
    from keras_team.app import cli

    folder = write_folder(tmp_path / "many", classes=[f"c{i:02d}" for i in range(30)], per_class=2, size=(8, 8))
    assert cli.main(["check", "--output-dir", str(tmp_path / "run"), "--set", f"data.target.name={folder}",
                     "--set", "data.target.classes=null", "--set", "data.target.shots=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"keras-team: error: data.target.name={str(folder)!r}") and err.count("\n") == 0, err
    assert "test split" in err and "test=" not in err and "Traceback" not in err
