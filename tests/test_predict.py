"""Your own data end to end: `keras-team run` on a folder of PNGs or a .npz, then `keras-team predict` names classes.

The large tests share one run on a folder of images (MobileNetV3Small, random weights, exported) and one on a
.npz file (the default zoo leader); the fast ones need no model.
"""

import json
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

import keras_team
from keras_team import Team, export, predictions
from keras_team.app import cli
from keras_team.errors import KerasTeamError

COLOURS = {"red": (210, 40, 40), "green": (40, 190, 40), "blue": (40, 40, 220)}  # the classes, sorted: blue, green, red
TINY = ["leader.epochs=1", "transfer.epochs=1", "followers.0.epochs=1", "followers.1.epochs=1", "baseline.epochs=1", "data.batch_size=16",
        "data.source.classes=null", "data.target.classes=null", "data.target.shots=4"]


def pixels(colour, rng, size=(32, 32)):
    """An image of `colour` with noise: its class shows in its pixels."""
    return np.clip(np.array(colour) + rng.integers(-30, 31, (*size, 3)), 0, 255).astype(np.uint8)


def write_folder(root, rng, train=10, test=4):
    for split, count in (("train", train), ("test", test)):
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(pixels(colour, rng)).save(root / split / name / f"{i}.png")
    return root


def run(out, *settings):
    argv = ["run", "--quiet", "--output-dir", str(out)]
    for setting in (*TINY, *settings):
        argv += ["--set", setting]
    return cli.main(argv)


def predict_json(capsys, *argv):
    capsys.readouterr()  # what came before, e.g. a run's table
    assert cli.main(["predict", *map(str, argv), "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def ensemble(run_dir, x, member=None, team=None):
    """The reference: the saved team's logits on `x`, softmaxed and weighted as report.json says."""
    team = team or keras.models.load_model(run_dir / "team.keras")
    logits = team.predict(x, verbose=0)
    weights = json.loads((run_dir / "report.json").read_text())["ensemble"]["weights"]
    chosen = Team.ensemble({member: logits[member]}) if member else Team.ensemble(logits, weights)
    return keras.ops.convert_to_numpy(chosen)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A finished run on a folder of 32x32 PNGs in train/ and test/, with a random MobileNetV3Small, exported."""
    root = tmp_path_factory.mktemp("user")
    images = write_folder(root / "shapes", np.random.default_rng(0))
    assert run(root / "run", f"data.source.name={images}", f"data.target.name={images}",
               "leader.application=MobileNetV3Small", "leader.weights=null", "export.formats=[saved_model,tflite]") == 0
    new = root / "new"
    new.mkdir()
    rng = np.random.default_rng(1)
    for name, colour in COLOURS.items():
        Image.fromarray(pixels(colour, rng)).save(new / f"a_{name}.png")
    return root / "run", new


@pytest.fixture(scope="module")
def folder_team(folder_run):
    return keras.models.load_model(folder_run[0] / "team.keras")


@pytest.mark.large
def test_a_run_on_a_folder_reports_exports_and_predicts_by_class_name(folder_run, folder_team, capsys):
    run_dir, new = folder_run
    report = json.loads((run_dir / "report.json").read_text())
    names = ["blue", "green", "red"]
    assert report["class_names"] == names and list(report["ensemble"]["test_accuracy_per_class"]) == names
    version = run_dir / "export" / "serving" / "team" / "1"
    assert (version / "assets" / "labels.txt").read_text().splitlines() == names
    assert (run_dir / "export" / "litert" / "team.float32.labels.txt").read_text().splitlines() == names

    answers = predict_json(capsys, run_dir, new, "--top", "3")
    files = sorted(new.glob("*.png"))
    assert [a["input"] for a in answers] == [str(f) for f in files]
    x = np.stack([np.asarray(Image.open(f)) for f in files])
    reference = ensemble(run_dir, x, team=folder_team)
    for answer, expected in zip(answers, reference):
        order = np.argsort(-expected, kind="stable")
        assert answer["classes"] == [names[i] for i in order]
        np.testing.assert_allclose(answer["probabilities"], expected[order], atol=1e-5)

    member = keras_team.predict(run_dir, files[0], member="mlp", top=1)[0]
    expected = ensemble(run_dir, x[:1], member="mlp", team=folder_team)[0]
    assert member.classes == (names[expected.argmax()],) and member.probabilities[0] == pytest.approx(expected.max(), abs=1e-5)

    # What a client of the exports gets: the SavedModel's classify answer and the LiteRT file's default signature.
    request = export.classify_request(x, name="team")
    served = tf.saved_model.load(str(version)).signatures["classify"](
        inputs=tf.constant([example.SerializeToString() for example in request.input.example_list.examples]))
    assert (served["classes"].numpy().astype(str) == names).all()
    np.testing.assert_allclose(served["scores"].numpy(), reference, atol=1e-5)
    logits = folder_team.predict(x, verbose=0)
    runner = Interpreter(model_path=str(run_dir / "export" / "litert" / "team.float32.tflite")).get_signature_runner()
    np.testing.assert_allclose(runner(inputs=x)["leader"], logits["leader"], atol=1e-3)
    record = json.loads((version / "assets.extra" / "keras_team.json").read_text())
    assert record["class_names"] == names and record["ensemble_weights"] == report["ensemble"]["weights"]
    assert record["cuts"]["leader"]["name"] == report["cut"]["name"]


@pytest.mark.large
def test_images_of_another_size_and_colour_are_read_as_the_training_folder_was(folder_run, folder_team, tmp_path, capsys):
    run_dir, _ = folder_run
    Image.fromarray(pixels(COLOURS["red"], np.random.default_rng(2), size=(45, 60))).convert("L").save(tmp_path / "grey.png")
    (answer,) = predict_json(capsys, run_dir, tmp_path / "grey.png", "--top", "2")
    x = tf.image.resize(tf.io.decode_png((tmp_path / "grey.png").read_bytes(), channels=3), (32, 32)).numpy()
    expected = ensemble(run_dir, np.round(x).astype(np.uint8)[np.newaxis], team=folder_team)[0]
    assert answer["classes"][0] == ["blue", "green", "red"][expected.argmax()]
    assert answer["probabilities"][0] == pytest.approx(expected.max(), abs=1e-5)


@pytest.mark.large
def test_inputs_read_a_batch_at_a_time_are_predicted_as_the_saved_team_predicts_them_all_at_once(
        folder_run, folder_team, tmp_path, capsys, monkeypatch):
    run_dir, new = folder_run
    monkeypatch.setattr(predictions, "BATCH_SIZE", 2)  # 3 images, 6 rows, 1 image: six batches, some partial
    monkeypatch.setattr(predictions, "PROGRESS_ABOVE", 10)
    rng = np.random.default_rng(3)
    rows = np.stack([pixels(colour, rng) for colour in COLOURS.values() for _ in range(2)])
    np.savez_compressed(tmp_path / "rows.npz", x=rows)
    files = sorted(new.glob("*.png"))
    capsys.readouterr()
    assert cli.main(["predict", str(run_dir), str(new), str(tmp_path / "rows.npz"), str(files[1]), "--json"]) == 0
    out, err = capsys.readouterr()
    answers = json.loads(out)  # the progress bar went to stderr
    assert "10/10" in err
    assert [a["input"] for a in answers] == [*map(str, files), *(f"{tmp_path / 'rows.npz'}[{i}]" for i in range(6)),
                                             str(files[1])]
    x = np.concatenate([np.stack([np.asarray(Image.open(f)) for f in files]), rows, np.asarray(Image.open(files[1]))[None]])
    names = ["blue", "green", "red"]
    for answer, expected in zip(answers, ensemble(run_dir, x, team=folder_team), strict=True):
        order = np.argsort(-expected, kind="stable")
        assert answer["classes"] == [names[i] for i in order]
        np.testing.assert_allclose(answer["probabilities"], expected[order], atol=1e-5)


@pytest.mark.large
def test_predict_mistakes_with_a_finished_run_are_one_line_errors(folder_run, tmp_path, capsys, monkeypatch):
    run_dir, new = folder_run
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    np.savez(tmp_path / "flat.npz", x=np.zeros((2, 32, 32), np.uint8))
    np.savez(tmp_path / "labels.npz", y=np.zeros(2, np.uint8))
    shutil.copytree(new, tmp_path / "many")  # a_blue.png, a_green.png, a_red.png, b_broken.png, c_red.png
    shutil.copy(tmp_path / "broken.png", tmp_path / "many" / "b_broken.png")
    shutil.copy(new / "a_red.png", tmp_path / "many" / "c_red.png")
    monkeypatch.setattr(predictions, "BATCH_SIZE", 2)  # the broken image is met in the second batch
    for argv, phrase in [([new, "--member", "nobody"], "member='nobody'"),
                         ([tmp_path / "broken.png"], "broken.png"),
                         ([tmp_path / "many"], "b_broken.png' is not valid: expected a readable image"),
                         ([tmp_path / "flat.npz"], "(examples, 32, 32, 3)"),
                         ([tmp_path / "labels.npz"], "a .npz file holding an array x (it holds y)")]:
        assert cli.main(["predict", str(run_dir), *map(str, argv)]) == cli.USER_ERROR
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("keras-team: error: ") and err.count("\n") == 1 and phrase in err, err


@pytest.mark.large
def test_a_run_on_a_npz_file_names_its_classes_and_predicts_arrays(tmp_path, capsys):
    rng = np.random.default_rng(0)
    names = np.array(["sky", "leaf", "rose"])
    colours = [COLOURS["blue"], COLOURS["green"], COLOURS["red"]]

    def arrays(per_class):
        y = np.repeat(np.arange(3), per_class)
        return np.stack([pixels(colours[label], rng) for label in y]), y

    (x, y), (x_test, y_test), (x_new, _) = arrays(10), arrays(4), arrays(1)
    np.savez(tmp_path / "colours.npz", x=x, y=y, x_test=x_test, y_test=y_test, class_names=names)
    np.savez(tmp_path / "new.npz", x=x_new)
    assert run(tmp_path / "run", f"data.source.name={tmp_path / 'colours.npz'}",
               f"data.target.name={tmp_path / 'colours.npz'}") == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["class_names"] == list(names) and set(report["ensemble"]["test_accuracy_per_class"]) == set(names)
    answers = predict_json(capsys, tmp_path / "run", tmp_path / "new.npz", "--top", "1")
    assert [a["input"] for a in answers] == [f"{tmp_path / 'new.npz'}[{i}]" for i in range(3)]
    expected = ensemble(tmp_path / "run", x_new)
    assert [a["classes"][0] for a in answers] == list(names[expected.argmax(axis=-1)])
    np.testing.assert_allclose([a["probabilities"][0] for a in answers], expected.max(axis=-1), atol=1e-5)


# --- fast: mistakes found before any model loads ---------------------------------------------------------


@pytest.mark.parametrize("make, phrase", [
    (lambda tmp: tmp / "missing.png", "no such file or folder"),
    (lambda tmp: (tmp / "notes.txt").write_text("hi") and tmp / "notes.txt", "an image (.bmp"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "a folder holding images"),
], ids=["missing", "text file", "empty folder"])
def test_inputs_that_are_not_images_or_arrays_are_refused_by_name(make, phrase, tmp_path):
    path = make(tmp_path)
    with pytest.raises(KerasTeamError, match=re.escape(phrase)) as caught:
        keras_team.predict(tmp_path, path)
    assert caught.value.field == "inputs" and str(path) in str(caught.value)


def test_a_directory_that_holds_no_finished_run_is_one_line_on_the_cli(tmp_path, capsys):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    assert cli.main(["predict", str(tmp_path), str(tmp_path / "a.png")]) == cli.USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a finished keras-team run directory holding team.keras and report.json" in err
    with pytest.raises(KerasTeamError, match="top=0"):
        keras_team.predict(tmp_path, tmp_path / "a.png", top=0)


def test_a_npz_file_is_read_a_batch_at_a_time_as_numpy_reads_it(tmp_path):
    x = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3)
    np.savez(tmp_path / "plain.npz", x=x)
    np.savez_compressed(tmp_path / "small.npz", x=x.astype(np.uint8), y=np.arange(7))
    np.savez(tmp_path / "fortran.npz", x=np.asfortranarray(x))
    for name in ("plain", "small", "fortran"):
        batches = list(predictions._npz_batches(tmp_path / f"{name}.npz", (2, 3), size=3))
        assert [len(rows) for _, rows in batches] == [3, 3, 1]
        assert sum((names for names, _ in batches), []) == [f"{tmp_path / name}.npz[{i}]" for i in range(7)]
        with np.load(tmp_path / f"{name}.npz") as archive:
            np.testing.assert_array_equal(np.concatenate([rows for _, rows in batches]), archive["x"])
