"""keras.applications leaders: built from the config, their own pixel scaling and a resize inside, block cuts.

Offline: every model is built with `weights=None`; the ImageNet path runs with Keras' download
replaced by a file written here, so nothing downloads.
"""

import inspect
import json
import pathlib
from unittest import mock

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

import keras_team
from keras_team import zoo
from keras_team.app import cli
from keras_team.app.config import load_config
from keras_team.app.recipe import load_tasks, make_plan
from keras_team.cuts import cut_points, default_cut, is_auto_named, resolve_cut
from keras_team.tuning.hypermodel import searchable_cuts
from keras_team.errors import KerasTeamError
from keras_team.layers import ApplicationPreprocessing, FitImages
from keras_team.taps import tap_tensor

PIXELS = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def mobilenet():
    """MobileNetV3Small as the digits' leader: 8x8 grey images in, resized to 32x32 RGB inside."""
    return zoo.application("MobileNetV3Small", (8, 8, 1), 5)


def _reference(name, **options):
    """The application as Keras builds it, with its own scaling where it has the option."""
    constructor = getattr(keras.applications, name)
    if "include_preprocessing" in inspect.signature(constructor).parameters:
        options["include_preprocessing"] = True
    return constructor(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg", **options)


def _features(leader):
    return keras.Model(leader.inputs, leader.get_layer("logits").input)


def _run_on(model, x):
    """The model's output on `x`, eagerly (faster than tracing `predict` for one small batch)."""
    return keras.ops.convert_to_numpy(model(keras.ops.convert_to_tensor(x), training=False))


# --- the leader takes raw pixels ---------------------------------------------------------------------


def test_images_are_resized_and_made_rgb_inside_the_model(mobilenet):
    assert tuple(mobilenet.inputs[0].shape) == (None, 8, 8, 1)  # what the client has
    grey = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 1)).astype("float32")
    fitted = _run_on(keras.Model(mobilenet.inputs, mobilenet.get_layer("fit_images").output), grey)
    expected = keras.ops.image.resize(np.repeat(grey, 3, axis=-1), (32, 32))
    np.testing.assert_allclose(fitted, keras.ops.convert_to_numpy(expected), atol=1e-4)


def test_no_resize_when_the_images_fit_and_rgb_becomes_grey_when_asked():
    assert "fit_images" not in [layer.name for layer in zoo.application("MobileNetV3Small", (32, 32, 3), 2).layers]
    rgb = keras.ops.convert_to_tensor(PIXELS[:1, :4, :4])
    grey = keras.ops.convert_to_numpy(FitImages(4, 4, 1)(rgb))
    np.testing.assert_allclose(grey, keras.ops.convert_to_numpy(keras.ops.image.rgb_to_grayscale(rgb)), atol=1e-4)


@pytest.mark.parametrize("name", [
    "MobileNetV3Small",
    pytest.param("ResNet50V2", marks=pytest.mark.large),
    pytest.param("EfficientNetV2B0", marks=pytest.mark.large),
    pytest.param("ConvNeXtTiny", marks=pytest.mark.large),
])
def test_the_applications_own_preprocessing_is_inside_the_model(name):
    """On raw 0..255 pixels the leader computes what Keras' application computes on what its docs say to feed."""
    leader = zoo.application(name, (32, 32, 3), 3)
    reference = _reference(name)
    reference.set_weights(_features(leader).get_weights())
    fed = PIXELS
    if "preprocess_input" in [layer.name for layer in leader.layers]:  # e.g. ResNet50V2: x / 127.5 - 1
        fed = keras.applications.resnet_v2.preprocess_input(PIXELS.copy())
        assert name == "ResNet50V2"
    np.testing.assert_allclose(_run_on(_features(leader), PIXELS), _run_on(reference, fed), rtol=1e-4, atol=1e-4)


def test_preprocessing_layer_saves_and_loads(tmp_path):
    model = keras.Sequential([keras.Input((2, 2, 3)), ApplicationPreprocessing("ResNet50V2")])
    model.save(tmp_path / "m.keras")
    out = keras.models.load_model(tmp_path / "m.keras").predict(PIXELS[:1, :2, :2], verbose=0)
    np.testing.assert_allclose(out, PIXELS[:1, :2, :2] / 127.5 - 1, atol=1e-5)


def test_imagenet_weights_come_through_keras_download_of_the_no_top_file(tmp_path):
    """The download is Keras' own (get_file, the no-top file, Keras' cache); its weights land in the leader."""
    reference = _reference("MobileNetV3Small")
    rng = np.random.default_rng(2)
    reference.set_weights([rng.normal(size=w.shape).astype("float32") for w in reference.get_weights()])
    fake = tmp_path / "weights.h5"
    with h5py.File(fake, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    with mock.patch.object(file_utils, "get_file", return_value=str(fake)) as download:
        leader = zoo.application("MobileNetV3Small", (8, 8, 1), 5, weights="imagenet")
    (args, kwargs), = download.call_args_list
    assert args[0] == "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" and kwargs["cache_subdir"] == "models"
    for got, want in zip(_features(leader).get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_a_failed_download_is_a_one_line_error_naming_the_weights():
    failure = Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -3] no network")
    with mock.patch.object(file_utils, "get_file", side_effect=failure):
        with pytest.raises(KerasTeamError, match="weights='imagenet' .*no network.*offline: weights=None"):
            zoo.application("MobileNetV3Small", (32, 32, 3), 2, weights="imagenet")


def test_shapes_and_names_the_application_refuses_are_one_line_errors():
    with pytest.raises(KerasTeamError, match="input_shape=.*at least 32x32"):
        zoo.application("MobileNetV3Small", (8, 8, 1), 5, application_shape=(16, 16, 3))
    with pytest.raises(KerasTeamError, match="input_shape=.*2 channels"):
        zoo.application("MobileNetV3Small", (8, 8, 2), 5)
    with pytest.raises(KerasTeamError) as error:
        make_plan(load_config(overrides=["leader.application=MobileNet3Small"]))
    assert error.value.field == "leader.application" and "MobileNetV3Small" in error.value.allowed


def test_config_takes_an_application_its_weights_and_input_shape(tmp_path):
    leader = load_config(overrides=["leader.application=ResNet50V2", "leader.input_shape=[64, 64, 3]"]).leader
    assert (leader.application, leader.weights, leader.input_shape) == ("ResNet50V2", "imagenet", (64, 64, 3))
    for overrides, field in ((["leader.application=ResNet50V2", "leader.input_shape=[64, 64]"], "leader.input_shape"),
                             (["leader.application=ResNet50V2", "leader.weights=random"], "leader.weights"),
                             (["leader.input_shape=[64, 64, 3]"], "leader.input_shape")):  # no application to fit
        with pytest.raises(KerasTeamError) as error:
            load_config(overrides=overrides)
        assert error.value.field == field
    (tmp_path / "x.keras").write_bytes(b"")
    with pytest.raises(KerasTeamError, match="null when path is given") as error:
        load_config(overrides=[f"leaders=[{{name: a, application: ResNet50V2, path: {tmp_path / 'x.keras'}}}]"])
    assert error.value.field == "leaders[0].application"


# --- the block view of cuts -------------------------------------------------------------------------


def test_block_view_names_each_block_output_once(mobilenet):
    blocks, every = cut_points(mobilenet, view="blocks"), cut_points(mobilenet)
    names = [c.name for c in blocks]
    assert len(every) == 61 and len(blocks) == 14
    assert {"expanded_conv_2_add", "expanded_conv_5_add", "expanded_conv_10_add", "avg_pool"} <= set(names)
    assert names[0] == "conv_out" and "conv_1_out" in names  # Keras named those activations: the block names them
    assert not any(is_auto_named(mobilenet.get_layer(n)) for n in names if n in {layer.name for layer in mobilenet.layers})
    assert all(c.depth >= 1 for c in blocks) and "logits" not in names  # keeps something, not everything
    assert sorted(c.position for c in blocks) == [c.position for c in blocks] and len(set(names)) == len(names)
    for cut in blocks:  # each name is a keep
        assert resolve_cut(mobilenet, cut.name).position == cut.position
    assert keras_team.body(mobilenet, "conv_1_out").output_shape == (None, 1, 1, 576)
    assert default_cut(mobilenet).name == "expanded_conv_5_add"


def test_every_build_has_the_same_layer_names(mobilenet):
    again = zoo.application("MobileNetV3Small", (8, 8, 1), 5)
    assert [c.name for c in cut_points(again)] == [c.name for c in cut_points(mobilenet)]
    assert "activation_17" in [c.name for c in cut_points(again)]


def test_cuts_command_lists_the_blocks_of_an_application(capsys):
    assert cli.main(["cuts", "MobileNetV3Small", "--input-shape", "32,32,3"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    leader = zoo.application("MobileNetV3Small", (32, 32, 3), 10)
    assert rows == [c.name for c in searchable_cuts(leader)]  # the cuts a search tries, each once


def test_cuts_command_shows_cuts_that_keep_the_same_weights_once(capsys):
    """MobileNetV2's last block, its activation and the pooling keep the same weights: one row, as the tuner
    merges them, naming the others."""
    assert cli.main(["cuts", "MobileNetV2", "--input-shape", "32,32,3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines[1:]]
    assert len(names) == len(set(names)) and "Conv_1_bn" not in names and "out_relu" not in names
    assert lines[-1].split()[0] == "global_average_pooling2d" and lines[-1].endswith("Conv_1_bn, out_relu")
    assert names == [c.name for c in searchable_cuts(zoo.application("MobileNetV2", (32, 32, 3), 10))]


@pytest.mark.large
def test_cuts_all_and_the_block_views_of_other_families(capsys):
    assert cli.main(["cuts", "MobileNetV3Small", "--input-shape", "32,32,3", "--all"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows[0] == "rescaling" and "activation_17" in rows and len(rows) == 60
    for name, block in (("EfficientNetV2B0", "block4c_add"), ("ResNet50V2", "conv4_block1_out"),
                        ("ConvNeXtTiny", "convnext_tiny_stage_2_block_0_out")):
        blocks = [c.name for c in cut_points(zoo.application(name, (32, 32, 3), 3), view="blocks")]
        assert block in blocks and not any(n.startswith(("activation", "add", "rescaling")) for n in blocks), blocks


# --- a leader's own `logits` layer --------------------------------------------------------------------


def test_a_leaders_own_logits_layer_is_reachable_beside_the_logits_tap():
    full = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=4,
                                               classifier_activation=None, include_preprocessing=True)
    assert tuple(tap_tensor(full, "logits").shape) == (None, 4)  # the model's logits
    assert tuple(tap_tensor(full, "layer:logits").shape) == (None, 1, 1, 4)  # its layer named logits


def test_a_follower_reads_a_layer_named_like_a_tap():
    inputs = keras.Input((4,))
    own = keras.layers.Dense(3, name="logits")(inputs)
    leader = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.ReLU()(own)))
    team = keras_team.Team(leader, [keras_team.Follower(zoo.mlp(2, hidden=()), tap="layer:logits", name="f")])
    x = np.ones((1, 4), "float32")
    reads = team.follower_graphs["f"].inputs
    assert [tuple(t.shape) for t in reads] == [(None, 3)]  # the layer's 3 units, not the 2 logits
    assert team.predict(x, verbose=0)["f"].shape == (1, 2)


# --- the recipe ----------------------------------------------------------------------------------------

TINY = ["leader.epochs=1", "transfer.epochs=1", "followers.0.epochs=1", "followers.1.epochs=1", "baseline.epochs=1",
        "data.source.shots=10", "data.target.shots=3", "data.batch_size=16"]


def _run(out, *overrides):
    argv = ["run", "--quiet", "--output-dir", str(out)]
    for override in (*TINY, *overrides):
        argv += ["--set", override]
    return cli.main(argv)


@pytest.mark.large
def test_run_trains_a_random_application_on_the_digits(tmp_path, capsys):
    settings = ["leader.application=MobileNetV3Small", "leader.weights=null"]
    assert cli.main(["check", "--output-dir", str(tmp_path / "run"), *[a for s in settings for a in ("--set", s)]]) == 0
    plan = capsys.readouterr().out
    assert "input   resized (8, 8, 1) -> (32, 32, 3) (bilinear), grey -> RGB, inside the model" in plan
    assert "keep 'expanded_conv_5_add' (the default: the middle block)" in plan
    assert _run(tmp_path / "run", *settings) == 0
    out = tmp_path / "run"
    assert (out / "logs" / "leader.csv").is_file()  # trained on the source
    team = keras.models.load_model(out / "team.keras")  # the resize travels with the saved team
    assert tuple(team.inputs[0].shape) == (None, 8, 8, 1)
    x_test = load_tasks(load_config(overrides=settings))[1].splits["test"][0][:4]
    student = keras.models.load_model(out / "stages" / "transfer.keras")
    np.testing.assert_allclose(team.predict(x_test, verbose=0)["leader"], student.predict(x_test, verbose=0), atol=1e-5)
    report = json.loads((out / "report.json").read_text())
    assert set(report["members"]) == {"leader", "mlp", "probe", "pooled"}


@pytest.mark.large
def test_run_with_imagenet_weights_skips_the_source_stage(tmp_path, capsys):
    reference = _reference("MobileNetV3Small")
    fake = tmp_path / "weights.h5"
    with h5py.File(fake, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    settings = ["leader.application=MobileNetV3Small"]  # weights: imagenet by default
    with mock.patch.object(file_utils, "get_file", return_value=str(fake)) as download:
        assert cli.main(["check", "--output-dir", str(tmp_path / "run"), "--set", settings[0]]) == 0
        assert "with ImageNet weights: already trained, not trained on digits" in capsys.readouterr().out
        assert not download.called  # the plan builds the structure only
        assert _run(tmp_path / "run", *settings) == 0
    assert download.call_count == 1
    out = tmp_path / "run"
    assert not (out / "logs" / "leader.csv").exists()
    stages = json.loads((out / "state.json").read_text())["stages"]
    assert stages["leader"]["weights"] == "imagenet"
    leader = keras.models.load_model(out / "leader.keras")
    for got, want in zip(_features(leader).get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert pathlib.Path(out / "team.keras").is_file()
