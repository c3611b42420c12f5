"""Export: SavedModels in TF Serving's layout, LiteRT files, serving files, parity checks."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

import keras_team
from keras_team import Follower, Team, export, zoo
from keras_team.app.export import export_model
from keras_team.errors import KerasTeamError
from keras_team.export import savedmodel
from keras_team.export.signatures import input_spec, serving_functions

ALL_FORMATS = ["saved_model", "tflite", "tflite-dynamic", "tflite-float16", "tflite-int8", "tflite-int8-float-io"]


@pytest.fixture(scope="module")
def digits():
    return keras_team.data.digits(classes=range(5), seed=0)


@pytest.fixture(scope="module")
def team(digits):
    keras.utils.set_random_seed(0)
    leader = zoo.seed_cnn((8, 8, 1), 5, name="leader")
    leader.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    leader.fit(*digits.splits["train"], epochs=4, verbose=0)
    followers = [
        Follower(zoo.mlp(5, dropout=0.5), name="mlp"),
        Follower(zoo.mlp(5), name="student", tap="probs", temperature=2.0, distill={"temperature": 2.0, "student_loss_weight": 0.5}),
    ]
    team = Team({"leader": leader}, followers)
    team.compile()
    team.fit(*digits.splits["train"], epochs=2, verbose=0)
    return team


@pytest.fixture(scope="module")
def exported(team, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    x_train = digits.splits["train"][0]
    report = export_model(team, out, name="digits", formats=ALL_FORMATS, train_examples=x_train,
                          examples=digits.images("validation"), labels=digits.labels("validation"), verified_on="validation",
                          class_names=NAMES, weights=WEIGHTS)
    return out, report


NAMES = ("zero", "one", "two", "three", "four")
WEIGHTS = {"leader": 0.5, "mlp": 0.5, "student": 0.0}  # as Team.ensemble_weights may pick them


def _keras_logits(model, x):
    return {name: np.asarray(value) for name, value in model(x.astype("float32"), training=False).items()}


@pytest.mark.large
def test_every_format_is_verified_and_matches_keras(exported, team, digits):
    out, report = exported
    assert report["passed"] and set(report["artefacts"]) == {
        "saved_model", "tflite-float32", "tflite-dynamic", "tflite-float16", "tflite-int8", "tflite-int8-float-io"}
    assert json.loads((out / "export_report.json").read_text()) == report
    members = ["leader", "mlp", "student"]
    assert set(report["artefacts"]["saved_model"]["signatures"]) == {"serving_default", "classify", *members}
    x, y = digits.splits["validation"]
    assert report["verified_on"] == "validation" and report["examples"] == len(y)
    reference = _keras_logits(team, x)
    for label, entry in report["artefacts"].items():
        if label != "saved_model":
            assert set(entry["signatures"]) == {"serving_default"}, label  # one signature: every member
        for outputs in entry["signatures"].values():
            for name in set(outputs) & set(members):
                assert outputs[name]["accuracy"] == pytest.approx(np.mean(
                    reference[name].argmax(-1) == y), abs=0.03), (label, name)
    # The leader learnt the digits: int8 keeps it as good as Keras.
    assert report["artefacts"]["tflite-int8"]["signatures"]["serving_default"]["leader"]["accuracy"] > 0.85
    # An independent run of the float32 file with the LiteRT interpreter itself: its one signature needs no name.
    runner = Interpreter(model_path=report["artefacts"]["tflite-float32"]["path"]).get_signature_runner()
    got = runner(inputs=x[:16])
    assert set(got) == set(members)
    np.testing.assert_allclose(got["mlp"], reference["mlp"][:16], atol=1e-4)
    for path in (entry["path"] for label, entry in report["artefacts"].items() if label != "saved_model"):
        assert export.labels_path(path).read_text().splitlines() == list(NAMES)


@pytest.mark.large
def test_the_saved_model_names_classes_and_serves_tf_servings_classify_api(exported, team, digits):
    out, _ = exported
    version = out / "serving" / "digits" / "1"
    x = digits.splits["test"][0][:12]
    logits = _keras_logits(team, x)
    ensemble = keras.ops.convert_to_numpy(Team.ensemble(logits, WEIGHTS))
    signatures = tf.saved_model.load(str(version)).signatures
    served = signatures["serving_default"](inputs=tf.constant(x))
    np.testing.assert_allclose(served["probabilities"].numpy(), ensemble, atol=1e-5)
    best = np.argsort(-ensemble, axis=-1)[:, :5]
    assert (served["top_class_ids"].numpy()[:, 0] == best[:, 0]).all()
    assert [name.decode() for name in served["top_classes"].numpy()[:, 0]] == [NAMES[i] for i in best[:, 0]]
    member = signatures["mlp"](inputs=tf.constant(x))  # one member: its own softmax
    np.testing.assert_allclose(member["probabilities"].numpy(), keras.ops.convert_to_numpy(
        keras.ops.softmax(logits["mlp"])), atol=1e-5)
    # TF Serving's Classify API: what the server does with a ClassificationRequest, the examples through `classify`.
    request = classification_pb2.ClassificationRequest.FromString(
        export.classify_request(x, name="digits").SerializeToString())
    examples = [example.SerializeToString() for example in request.input.example_list.examples]
    answer = signatures[request.model_spec.signature_name](inputs=tf.constant(examples))
    assert (answer["classes"].numpy().astype(str) == np.array(NAMES)).all()
    np.testing.assert_allclose(answer["scores"].numpy(), ensemble, atol=1e-5)
    shown = saved_model_pb2.SavedModel.FromString((version / "saved_model.pb").read_bytes())
    assert shown.meta_graphs[0].signature_def["classify"].method_name == "tensorflow/serving/classify"
    assert (version / "assets" / "labels.txt").read_text().splitlines() == list(NAMES)
    record = json.loads((version / "assets.extra" / "keras_team.json").read_text())
    assert record["class_names"] == list(NAMES) and record["ensemble_weights"] == WEIGHTS
    assert record["members"] == {"leader": ["leader"], "mlp": ["mlp"], "student": ["student"]}
    assert record["input"]["dtype"] == "uint8" and record["input"]["preprocessing"][0]["scale"] == pytest.approx(1 / 255)
    assert record["versions"]["keras-team"] == keras_team.__version__


@pytest.mark.large
def test_litert_files_have_the_quantization_asked_for(exported):
    _, report = exported
    paths = {label: entry["path"] for label, entry in report["artefacts"].items() if label != "saved_model"}

    def tensor_types(path):
        interpreter = Interpreter(model_path=path)
        return {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}

    assert "int8" not in tensor_types(paths["tflite-float32"]) and "float16" not in tensor_types(paths["tflite-float32"])
    assert "float16" in tensor_types(paths["tflite-float16"])
    assert "int8" in tensor_types(paths["tflite-dynamic"])
    sizes = {label: os.path.getsize(path) for label, path in paths.items()}
    assert sizes["tflite-int8"] < sizes["tflite-float16"] < sizes["tflite-float32"]
    for label, output_type in [("tflite-int8", np.int8), ("tflite-int8-float-io", np.float32)]:
        runner = Interpreter(model_path=paths[label]).get_signature_runner()
        assert runner.get_input_details()["inputs"]["dtype"] == np.uint8  # raw pixels in
        assert runner.get_output_details()["leader"]["dtype"] == output_type


@pytest.mark.large
def test_saved_model_cli_shows_the_documented_names(exported):
    out, _ = exported
    shown = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--all", "--dir",
                            str(out / "serving" / "digits" / "1")], capture_output=True, text=True, check=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    for signature in ["serving_default", "leader", "mlp", "student"]:
        assert f"signature_def['{signature}']" in shown
    default = shown.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['inputs']" in default and "DT_UINT8" in default and "(-1, 8, 8, 1)" in default
    for output in ["leader", "mlp", "student"]:
        assert f"outputs['{output}']" in default
    member = shown.split("signature_def['mlp']")[1].split("signature_def[")[0]
    assert "outputs['mlp']" in member and "outputs['leader']" not in member


def test_serving_default_runs_the_shared_leader_once(team):
    functions = serving_functions(team, input_spec(team, "uint8"))

    def convolutions(name):
        graph = functions[name].get_concrete_function().graph
        return sum(op.type == "Conv2D" for op in graph.get_operations())

    assert convolutions("leader") == 2  # the seed CNN's two conv layers
    assert convolutions("serving_default") == convolutions("mlp") == convolutions("leader")


def test_serving_graph_holds_no_distillation_loss_nor_dropout(team):
    def op_types(function):
        return {op.type for op in function.get_concrete_function().graph.get_operations()}

    training_only = {"LogSoftmax", "Log", "StatelessRandomUniformV2", "RandomUniform"}  # KL loss, dropout masks
    training = tf.function(lambda x: team(x, training=True), input_signature=[tf.TensorSpec((None, 8, 8, 1))])
    assert {"LogSoftmax", "StatelessRandomUniformV2"} <= op_types(training)  # the team does train with them
    for name, function in serving_functions(team, input_spec(team, "uint8")).items():
        assert not op_types(function) & training_only, name


def test_serving_path_does_no_training_only_work(tmp_path, digits):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.GaussianNoise(1.0)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(keras.layers.Dense(16)(x))
    model = keras.Model(inputs, keras.layers.Dense(3)(x), name="noisy")
    sample = digits.splits["test"][0][:32]
    version = export.saved_model(model, tmp_path, name="noisy", input_dtype="uint8")
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    first, second = (serve(inputs=tf.constant(sample))["noisy"].numpy() for _ in range(2))
    inference = np.asarray(model(sample.astype("float32"), training=False))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, inference, atol=1e-5)
    assert not np.allclose(np.asarray(model(sample.astype("float32"), training=True)), inference, atol=1e-3)


def test_versions_are_next_free_never_overwritten_and_forced_on_demand(tmp_path):
    model = _tiny(4)
    assert export.saved_model(model, tmp_path, name="tiny").name == "1"
    assert export.saved_model(model, tmp_path, name="tiny").name == "2"
    stamp = (tmp_path / "tiny" / "1" / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(KerasTeamError, match="version=1 .*force"):
        export.saved_model(model, tmp_path, name="tiny", version=1)
    assert (tmp_path / "tiny" / "1" / "saved_model.pb").stat().st_mtime_ns == stamp
    assert export.saved_model(model, tmp_path, name="tiny", version=1, force=True).name == "1"
    assert (tmp_path / "tiny" / "1" / "saved_model.pb").stat().st_mtime_ns != stamp
    assert export.saved_model(model, tmp_path, name="tiny", version=7).name == "7"
    assert export.versions(tmp_path / "tiny") == [1, 2, 7]
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["1", "2", "7"]  # no temporary left
    with pytest.raises(KerasTeamError, match="version=0"):
        export.saved_model(model, tmp_path, name="tiny", version=0)


def _tiny(width):
    inputs = keras.Input((width,), name="features")
    return keras.Model(inputs, keras.layers.Dense(3)(inputs), name="tiny")


def test_a_failed_export_leaves_no_version_directory(tmp_path, monkeypatch):
    def half_written(model, path, spec, **kwargs):
        (pathlib.Path(path) / "saved_model.pb").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(savedmodel, "write_archive", half_written)
    with pytest.raises(RuntimeError, match="disk full"):
        export.saved_model(_tiny(4), tmp_path, name="tiny")
    assert list((tmp_path / "tiny").iterdir()) == []


@pytest.mark.large
def test_export_writes_a_serving_config_that_parses_with_the_serving_protos(exported):
    out, _ = exported
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((out / "serving" / "models.config").read_text(), config)
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == ("digits", "/models/digits", "tensorflow")
    assert entry.model_version_policy.latest.num_versions == 1


def test_serving_config_version_policies_parse_with_the_serving_protos(tmp_path):
    for version in (1, 2):
        export.saved_model(_tiny(4), tmp_path, name="tiny", version=version)
    path = export.serving_config(tmp_path, version_policy=[2], mount="/srv")
    text_format.Parse(path.read_text(), config := model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert entry.base_path == "/srv/tiny" and list(entry.model_version_policy.specific.versions) == [2]
    text_format.Parse(export.serving_config(tmp_path, version_policy="all").read_text(),
                      config := model_server_config_pb2.ModelServerConfig())
    assert config.model_config_list.config[0].model_version_policy.HasField("all")
    with pytest.raises(KerasTeamError, match=r"version_policy=\[3\].*\[1, 2\]"):
        export.serving_config(tmp_path, version_policy=[3])


@pytest.mark.large
def test_warmup_records_are_prediction_logs_the_model_answers(exported, digits):
    out, _ = exported
    version = out / "serving" / "digits" / "1"
    records = list(tf.data.TFRecordDataset(str(version / "assets.extra" / "tf_serving_warmup_requests")))
    assert len(records) == 10
    serve = tf.saved_model.load(str(version)).signatures
    x_train = digits.splits["train"][0]
    for index, record in enumerate(records[:3]):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "digits" and request.model_spec.signature_name == "serving_default"
        example = tf.make_ndarray(request.inputs["inputs"])
        np.testing.assert_array_equal(example, x_train[index:index + 1])
        assert set(serve["serving_default"](inputs=tf.constant(example))) == {
            "leader", "mlp", "student", "probabilities", "top_class_ids", "top_classes", "top_scores"}


@pytest.mark.large
def test_rest_and_grpc_requests_reach_the_signatures(exported, team, digits):
    out, _ = exported
    x = digits.splits["test"][0][:4]
    reference = _keras_logits(team, x)
    signatures = tf.saved_model.load(str(out / "serving" / "digits" / "1")).signatures
    body = json.loads(json.dumps(export.rest_request(x, signature_name="mlp")))
    assert body["signature_name"] == "mlp"
    served = signatures[body["signature_name"]](inputs=tf.constant(np.array(body["instances"], np.uint8)))
    np.testing.assert_allclose(served["mlp"].numpy(), reference["mlp"], atol=1e-5)

    request = predict_pb2.PredictRequest.FromString(
        export.grpc_request(x, name="digits", signature_name="leader", version=1).SerializeToString())
    assert (request.model_spec.name, request.model_spec.version.value) == ("digits", 1)
    tensor = tf.make_ndarray(request.inputs["inputs"])
    assert tensor.dtype == np.uint8
    served = signatures[request.model_spec.signature_name](inputs=tf.constant(tensor))
    np.testing.assert_allclose(served["leader"].numpy(), reference["leader"], atol=1e-5)


@pytest.mark.large  # an export round trip
def test_verify_catches_a_broken_artefact(team, digits, tmp_path):
    broken = keras.models.clone_model(team)
    broken.set_weights(team.get_weights())
    follower = broken.get_layer("mlp_graph")
    follower.set_weights([w * 0.5 for w in follower.get_weights()])
    path = export.tflite(broken, tmp_path / "broken.tflite")
    x, y = digits.splits["test"]
    with pytest.raises(KerasTeamError, match=r"artefact tflite-float32.*serving_default/mlp: max_abs_diff="):
        export.verify(team, {"tflite-float32": path}, x, y, report_path=tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert not report["passed"] and report["artefacts"]["tflite-float32"]["signatures"]["serving_default"]["leader"]["max_abs_diff"] < 1e-4


@pytest.mark.large  # a LiteRT conversion round trip
def test_unconvertible_op_fails_naming_member_and_op(team, tmp_path):
    odd = keras.Sequential([keras.layers.Flatten(), _Erfinv(), keras.layers.Dense(5)], name="odd")
    with_odd = Team({"leader": team.leaders["leader"]}, [Follower(odd, name="odd"), Follower(zoo.mlp(5), name="fine")])
    with pytest.raises(KerasTeamError) as caught:
        export.tflite(with_odd, tmp_path / "odd.tflite")
    message = str(caught.value)
    assert "member odd" in message and "Erfinv" in message and "fine" not in message
    assert "\n" not in message and "loc(" not in message
    assert not (tmp_path / "odd.tflite").exists()


class _Erfinv(keras.layers.Layer):
    """erfinv has no TFLite builtin kernel."""

    def call(self, x):
        return keras.ops.erfinv(keras.ops.tanh(x) * 0.5)


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        ({"quantization": "int4"}, "quantization='int4'"),
        ({"quantization": "int8"}, "representative_data=None"),
        ({"quantization": "int8-uint8-io", "representative_data": np.zeros((2, 4))}, "quantization='int8-uint8-io'"),
        ({"quantization": "int8", "representative_data": np.zeros((2, 5))}, "representative_data='shape"),
    ],
)
def test_tflite_argument_errors(kwargs, phrase, tmp_path):
    with pytest.raises(KerasTeamError, match=phrase.replace("(", r"\(").replace("[", r"\[")):
        export.tflite(_tiny(4), tmp_path / "t.tflite", **kwargs)



@pytest.mark.large  # a LiteRT conversion
def test_conversion_and_verification_leave_stderr_to_the_converter_and_print_no_xnnpack_line(tmp_path, capfd,
                                                                                            monkeypatch):
    from keras_team.export import litert

    redirected = []
    monkeypatch.setattr(os, "dup2", lambda *fds: redirected.append(fds))  # a converter crash must leave its message
    model = _tiny(4)
    path = export.tflite(model, tmp_path / "tiny.tflite")
    monkeypatch.undo()
    assert redirected == []
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    assert np.allclose(litert.predict(path, x)["tiny"], model.predict(x, verbose=0), atol=1e-4)
    assert "XNNPACK" not in capfd.readouterr().err


@pytest.mark.large  # LiteRT round trips
def test_one_format_vocabulary_in_python_and_on_the_command_line(tmp_path):
    model = _tiny(4)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    io_types = {}
    for quantization in ("int8", "int8-float-io"):
        path = export.tflite(model, tmp_path / f"tiny.{quantization}.tflite", quantization=quantization, representative_data=x)
        runner = Interpreter(model_path=str(path)).get_signature_runner()
        io_types[quantization] = (runner.get_input_details()["inputs"]["dtype"], runner.get_output_details()["tiny"]["dtype"])
    assert io_types == {"int8": (np.int8, np.int8), "int8-float-io": (np.float32, np.float32)}  # as tflite-int8 on the CLI
    assert export.FORMATS["tflite-int8"] == "int8" and export.FORMATS["tflite"] == "float32"
    float32 = export.tflite(model, tmp_path / "tiny.tflite")
    report = export.verify(model, {"tflite": float32, "tflite-int8": tmp_path / "tiny.int8.tflite"}, x)  # the README's names
    assert report["passed"] and report["artefacts"]["tflite"]["tolerance"] == export.TOLERANCES["tflite-float32"]


def test_a_converter_refusal_is_said_whole_and_any_other_failure_is_not_blamed_on_the_model(tmp_path, monkeypatch):
    from tensorflow.lite.python.convert_phase import ConverterError

    from keras_team.export import litert

    said = "the converter's first line\n" + "x" * 300 + "\nand what it says last"

    def refuses(*args):
        raise ConverterError(said)

    monkeypatch.setattr(litert, "_convert", refuses)
    with pytest.raises(KerasTeamError) as caught:
        export.tflite(_tiny(4), tmp_path / "t.tflite")
    assert "and what it says last" in str(caught.value) and "\n" not in str(caught.value)

    def crashes(*args):
        raise RuntimeError("a bug, not the model")

    monkeypatch.setattr(litert, "_convert", crashes)
    with pytest.raises(RuntimeError, match="a bug, not the model"):
        export.tflite(_tiny(4), tmp_path / "t.tflite")
    assert not (tmp_path / "t.tflite").exists()


def _scaled(scale, shift=0.0):
    """A small classifier whose logits span about `scale` (plus `shift` on every logit: the same top-1)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,), name="features")
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    logits = keras.layers.Dense(5, kernel_initializer=keras.initializers.RandomNormal(stddev=scale),
                                bias_initializer=keras.initializers.Constant(shift))(hidden)
    return keras.Model(inputs, logits, name="tiny")


@pytest.mark.large  # LiteRT round trips
def test_quantized_files_are_held_to_a_fraction_of_the_logit_range(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 16)).astype("float32")
    calibration, checked = x[:100], x[100:]  # calibrate on one half, check on the other
    large = _scaled(100.0)  # logits span ~1700: int8 rounding alone moves them by more than a few units
    export.tflite(large, tmp_path / "large.tflite", quantization="int8", representative_data=calibration)
    report = export.verify(large, {"tflite-int8": tmp_path / "large.tflite"}, checked)
    assert report["passed"]
    figures = report["artefacts"]["tflite-int8"]["signatures"]["serving_default"]["tiny"]
    assert figures["max_abs_diff"] > 2.5 and figures["max_range_diff"] < 0.1

    small = _scaled(0.05)  # logits span ~1: a file off by 1 on every logit is off by their whole range
    export.tflite(_scaled(0.05, shift=1.0), tmp_path / "shifted.tflite", quantization="dynamic")
    with pytest.raises(KerasTeamError, match="max_range_diff="):
        export.verify(small, {"tflite-dynamic": tmp_path / "shifted.tflite"}, checked)
