"""Never lose a finished run (the export comes last, its failure keeps the run, a rerun redoes only the export),
and bad input caught where it enters: NaN, sizes declared too large, names and shapes the user did not mean."""

import json
import os

import numpy as np
import pytest

from keras_team.app import cli, workspace
from keras_team.app.config import load_config
from keras_team.errors import ExportFailed, KerasTeamError
from keras_team.export import parity
from tests.test_run import TINY, _args


def _evaluated(root, config, *, exported=False):
    """A run directory whose every stage up to the report finished (and, if `exported`, its export)."""
    ws = workspace.Workspace.prepare(root, config)
    with ws.start():
        ws.finish("leader", {"seconds": 1.0})
        ws.finish("evaluate", {})
        if exported:
            ws.finish("export", {})
    return ws


def test_a_rerun_changing_only_the_export_keeps_the_trained_stages_and_redoes_the_export(tmp_path):
    root = tmp_path / "run"
    config = load_config(overrides=[f"output_dir={root}", "export.formats=[tflite-int8]"])
    _evaluated(root, config)  # the export failed: the same config resumes, to export again
    assert workspace.Workspace.prepare(root, config).state["stages"].keys() == {"leader", "evaluate"}

    other = load_config(overrides=[f"output_dir={root}", "export.formats=[tflite-dynamic]", "tune.max_trials=3"])
    ws = workspace.Workspace.prepare(root, other)
    assert not ws.replace and ws.state["stages"].keys() == {"leader", "evaluate"}
    with ws.start():
        pass
    assert load_config(root / "config.yaml").export.formats == ("tflite-dynamic",)  # what the directory's tools read

    _evaluated(tmp_path / "done", config, exported=True)  # a finished export, asked for other formats: redone
    ws = workspace.Workspace.prepare(tmp_path / "done", other)
    assert ws.state["stages"].keys() == {"leader", "evaluate"}
    with pytest.raises(KerasTeamError, match="a finished run"):  # the same config, all done: nothing to redo
        workspace.Workspace.prepare(tmp_path / "done", config)
    for training in ("seed=1", "transfer.epochs=3"):  # what changes the trained stages is another config
        with pytest.raises(KerasTeamError, match="a finished run"):
            workspace.Workspace.prepare(tmp_path / "done", load_config(overrides=[f"output_dir={tmp_path / 'done'}",
                                                                                  training]))


def test_an_int8_miss_says_what_to_try():
    entry = {"misses": ["serving_default/team: top1_agreement=0.9300 < 0.95"], "tolerance": {"top1_agreement": 0.95}}
    with pytest.raises(ExportFailed) as caught:
        parity.raise_misses({"artefacts": {"saved_model": {"misses": []}, "tflite-int8-float-io": entry}})
    message = str(caught.value)
    assert message.startswith("artefact tflite-int8-float-io=") and "top1_agreement=0.9300 < 0.95" in message
    assert all(tip in message for tip in ("representative data", "--calibration-examples", "tflite-dynamic",
                                          "tflite-float16"))
    assert isinstance(caught.value, KerasTeamError)  # callers catching the user-error class still catch it


def test_export_rejects_a_calibration_size_below_one_before_reading_anything(tmp_path, capsys):
    (tmp_path / "team.keras").write_bytes(b"")
    assert cli.main(["export", str(tmp_path / "team.keras"), "--calibration-examples", "0"]) == cli.USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calibration-examples=0" in err


@pytest.mark.large
def test_a_parity_miss_inside_run_keeps_the_finished_run_usable(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setitem(parity.TOLERANCES, "tflite-float32", {"max_abs_diff": -1.0, "top1_agreement": 1.0})
    argv = _args(out, "export.formats=[saved_model,tflite]")
    assert cli.main(argv) == cli.EXPORT_FAILED
    captured = capsys.readouterr()
    assert captured.err.startswith("keras-team: export failed: artefact tflite-float32=") and "max_abs_diff=" in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "ensemble" in captured.out  # the run's table was printed before the export's line
    for name in ("team.keras", "report.json", "report.md", "accuracy.png"):
        assert (out / name).is_file(), name
    state = json.loads((out / "state.json").read_text())
    assert "evaluate" in state["stages"] and "export" not in state["stages"]
    exported = json.loads((out / "export" / "export_report.json").read_text())
    assert exported["artefacts"]["saved_model"]["passed"] and not exported["artefacts"]["tflite-float32"]["passed"]
    missed = exported["artefacts"]["tflite-float32"]["signatures"]["serving_default"]
    assert all(0 <= figures["max_abs_diff"] < 1e-3 for figures in missed.values())  # the missed one's figures kept
    assert (out / "export" / "serving" / "team" / "1" / "saved_model.pb").is_file()  # verified, so published
    assert not (out / "export" / "litert" / "team.float32.tflite").exists()  # missed, so never published

    assert cli.main(["evaluate", str(out)]) == 0
    np.savez(tmp_path / "rows.npz", x=np.zeros((2, 8, 8, 1), np.uint8))
    assert cli.main(["predict", str(out), str(tmp_path / "rows.npz"), "--top", "1"]) == 0
    trained = {name: os.stat(out / name).st_mtime_ns for name in ("leader.keras", "team.keras", "baseline.keras")}

    assert cli.main(argv) == cli.EXPORT_FAILED  # the same command: only the export again, failing again
    assert {name: os.stat(out / name).st_mtime_ns for name in trained} == trained
    monkeypatch.undo()
    assert cli.main(_args(out, "export.formats=[tflite-float16]")) == 0  # other formats: exported, nothing retrained
    assert {name: os.stat(out / name).st_mtime_ns for name in trained} == trained
    state = json.loads((out / "state.json").read_text())
    assert list(state["stages"]["export"]) == ["tflite-float16"] and (out / "export" / "litert" / "team.float16.tflite").is_file()
    assert json.loads((out / "report.json").read_text())["stages"]["export"]["tflite-float16"]["top1_agreement"] >= 0.98
    assert cli.main(["export", str(out), "--formats", "tflite", "--output-dir", str(tmp_path / "again")]) == 0


def test_predict_refuses_nan_and_zero_to_one_floats_for_a_team_of_uint8_pixels(tmp_path):
    from keras_team import Follower, Team, predictions, zoo

    team = Team({"leader": zoo.seed_cnn((8, 8, 1), 2, name="leader")}, [Follower(zoo.mlp(2), name="mlp")])
    team.save(tmp_path / "team.keras")
    (tmp_path / "report.json").write_text(json.dumps({"class_names": ["a", "b"], "ensemble": {"weights": None}}))
    scaled = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)  # [0, 1]: every row would read as 0
    np.savez(tmp_path / "scaled.npz", x=scaled)
    with pytest.raises(KerasTeamError, match=r"scaled.npz\[0\]: floats from 0.* to 0.9.*multiply \[0, 1\] values by 255"):
        predictions.predict(tmp_path, tmp_path / "scaled.npz")
    nan = scaled * 255
    nan[1, 2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan)
    with pytest.raises(KerasTeamError, match=r"nan.npz\[1\]: NaN/inf values"):
        predictions.predict(tmp_path, tmp_path / "nan.npz")
    np.savez(tmp_path / "pixels.npz", x=np.round(scaled * 255))  # 0-255 floats: answered
    assert [len(p.classes) for p in predictions.predict(tmp_path, tmp_path / "pixels.npz", top=1)] == [1, 1, 1]


def test_classes_named_like_numbers_are_chosen_by_name_not_position_and_the_plan_names_them(tmp_path):
    from keras_team.app.recipe import make_plan
    from keras_team.data import load_task

    x = np.repeat(np.arange(4, dtype=np.uint8) * 60, 20 * 64).reshape(80, 8, 8, 1)  # each class its own grey
    y = np.repeat(np.arange(4), 20)  # folders 1, 2, 5, 7 read as labels 0..3
    np.savez(tmp_path / "numbered.npz", x=x, y=y, class_names=np.array(["1", "2", "5", "7"]))
    task = load_task(str(tmp_path / "numbered.npz"), classes=[1, 7])
    assert task.class_names == ("1", "7")
    kept = {int(image.max()) for split in ("train", "validation", "test") for image in task.images(split)}
    assert kept == {0, 180}  # the examples of folders 1 and 7 (labels 0 and 3), not of labels 1 and 2
    config = load_config(overrides=[f"data.source.name={tmp_path / 'numbered.npz'}", "data.source.classes=[2, 5]",
                                    f"data.target.name={tmp_path / 'numbered.npz'}", "data.target.classes=[1, 7]",
                                    "data.target.shots=null", "followers=[]"])
    assert "classes source 2, 5; target 1, 7" in make_plan(config).describe().splitlines()


def test_too_few_examples_to_hold_a_test_split_out_names_the_data_not_an_internal_field(tmp_path):
    from keras_team.app.recipe import load_tasks

    x, y = np.zeros((20, 8, 8, 1), np.uint8), np.repeat(np.arange(10), 2)  # 10 classes, 2 examples each
    np.savez(tmp_path / "few.npz", x=x, y=y)
    config = load_config(overrides=[f"data.target.name={tmp_path / 'few.npz'}", "data.target.classes=null",
                                    "data.target.shots=null"])
    with pytest.raises(KerasTeamError) as caught:
        load_tasks(config)
    assert caught.value.field == "data.target.name" and "test" not in caught.value.field
    assert "a test split" in str(caught.value) and "30%" in str(caught.value)


def test_images_too_small_for_the_architecture_are_a_one_line_error_while_planning(tmp_path):
    from keras_team.app.recipe import make_plan

    x, y = np.zeros((60, 2, 2, 1), np.uint8), np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "tiny.npz", x=x, y=y)
    overrides = [f"data.{task}.name={tmp_path / 'tiny.npz'}" for task in ("source", "target")]
    config = load_config(overrides=[*overrides, "data.source.classes=null", "data.target.classes=null",
                                    "data.target.shots=null", "leader.architecture=seed_cnn"])
    with pytest.raises(KerasTeamError) as caught:
        make_plan(config)
    assert caught.value.field == "leader.architecture" and "2x2 images" in caught.value.allowed
    assert "residual_cnn from 2x2" in caught.value.allowed


def test_int8_calibration_refuses_nan_examples_before_converting(tmp_path):
    from keras_team import zoo
    from keras_team.export import litert

    x = np.random.default_rng(0).random((12, 8, 8, 1)).astype(np.float32) * 255
    x[5, 1, 1] = np.nan
    with pytest.raises(KerasTeamError, match="representative_data='1 of 12 examples with NaN/inf values'"):
        litert.tflite(zoo.seed_cnn((8, 8, 1), 2), tmp_path / "m.tflite", quantization="int8", representative_data=x)
    assert not list(tmp_path.iterdir())


def test_a_small_npz_declaring_a_huge_array_is_refused_before_it_is_read(tmp_path):
    import io
    import zipfile

    from keras_team.data import load_task

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**7, 1000, 1000)})
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as archive:  # 10 TB declared, a few bytes stored
        archive.writestr("x.npy", header.getvalue() + b"\x00" * 16)
        with archive.open("y.npy", "w") as y:
            np.save(y, np.zeros(3, np.int64))
    assert (tmp_path / "bomb.npz").stat().st_size < 1000
    with pytest.raises(KerasTeamError, match=r"bomb.npz.*arrays declare 9313.2 GiB"):
        load_task(str(tmp_path / "bomb.npz"))


def test_an_image_declaring_a_huge_size_is_refused_by_name_before_it_is_decoded(tmp_path):
    import struct
    import zlib

    from PIL import Image

    from keras_team.data import load_task

    for label in ("a", "b"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / "train" / label / f"{i}.png")
    png = bytearray((tmp_path / "train" / "b" / "0.png").read_bytes())
    png[16:24] = struct.pack(">II", 200_000, 200_000)  # IHDR width and height: 40 gigapixels declared
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    (tmp_path / "train" / "b" / "huge.png").write_bytes(bytes(png))
    with pytest.raises(KerasTeamError, match=r"huge.png.*an image of at most [\d,]+ pixels"):
        load_task(str(tmp_path))


def test_a_test_folder_missing_a_class_or_missing_altogether_is_handled_by_name(tmp_path):
    from PIL import Image

    from keras_team.data import load_task

    for split, labels in (("train", "abc"), ("test", "ab")):
        for label in labels:
            (tmp_path / "both" / split / label).mkdir(parents=True)
            for i in range(10):
                Image.new("L", (8, 8), 20 * i).save(tmp_path / "both" / split / label / f"{i}.png")
    with pytest.raises(KerasTeamError, match=r"both/test'.*a folder for every class of train/.*\['c'\] missing"):
        load_task(str(tmp_path / "both"))
    (tmp_path / "both" / "test").rename(tmp_path / "test")  # train/ alone: a test split is held out of it
    task = load_task(str(tmp_path / "both"), validation=0.2)
    assert task.class_names == ("a", "b", "c") and len(task.labels("test")) == 9
