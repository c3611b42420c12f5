"""keras-hub's own layer and model checks on keras-team's layers and models, and a keras-hub backbone as a leader.

keras-hub's `TestCase` helpers run as keras-hub runs them on its own layers,
with backend tensors. One rule of theirs does not hold here by design:
`run_precision_test` wants every output in the policy's compute dtype,
while a `Team` and a `Transferred` return float32 logits (Keras' mixed
precision guide); their precision is checked by `check_precision`, the same
checks with float32 outputs and logits layers.
"""

import importlib

import keras
import numpy as np
import pytest
from keras import ops

import keras_team
from keras_team import Follower, KerasTeamError, Team, graph
from keras_team.heads import CosineLogits
from keras_team.layers import (ApplicationPreprocessing, Distillation, FitImages, InferenceMode, LeaderTaps,
                               StopGradient, TemperatureSoftmax)
from keras_team.transfers import Transferred

pytestmark = pytest.mark.large

MIXED = ("mixed_float16", "mixed_bfloat16")


def hub_models():
    """`keras_hub.models`, loaded on a test's first use, not when the fast set collects this module."""
    return importlib.import_module("keras_hub").models


@pytest.fixture(scope="module")
def hub():
    """keras-hub's TestCase, its helpers called as methods of one instance."""
    test_case = importlib.import_module("keras_hub.src.tests.test_case").TestCase

    class Checks(test_case):
        def runTest(self):  # unittest wants a test method to make an instance
            pass

        def check_precision(self, make, input_data, outputs: int):
            """`run_precision_test`'s checks, with float32 outputs and logits layers (see the module docstring)."""
            for name in MIXED:
                model = make(dtype=name)
                output = model(input_data)
                spec = model.compute_output_spec(keras.KerasTensor(input_data.shape))
                flat, flat_spec = keras.tree.flatten(output), keras.tree.flatten(spec)
                self.assertLen(flat, outputs)
                for tensor, tensor_spec in zip(flat, flat_spec):
                    self.assertDTypeEqual(tensor, "float32")
                    self.assertEqual(tensor_spec.dtype, "float32")
                for weight in model.weights:
                    self.assertDTypeEqual(weight, "float32")
                float32 = {layer.name for layer in graph.sublayers(model) if layer.compute_dtype == "float32"}
                self.assertEqual(float32, {"logits", *model.output_names} if isinstance(model, Team) else {"logits"})
                self.assertEqual(model.dtype_policy.name, name)
                body = model.get_layer("body") if isinstance(model, Transferred) else model.leaders["leader"].body
                self.assertEqual(keras.dtype_policies.get(name).compute_dtype, body.compute_dtype)

    return Checks()


def tiny_resnet(**kwargs) -> keras.Model:
    """A randomly initialised keras-hub ResNet backbone from its config: 16x16 RGB in, 2x2x16 feature maps out."""
    return hub_models().ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(16, 16, 3), **kwargs)


def backbone_leader(num_classes: int) -> keras.Model:
    """The README's recipe: pooling and a logits layer on the backbone's own graph (its blocks stay cut points)."""
    backbone = tiny_resnet()
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(features)
    return keras.Model(backbone.input, logits, name="leader")


def images(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3)).astype("float32")


def test_stop_gradient(hub):
    hub.run_layer_test(StopGradient, {}, ops.ones((2, 3)), (2, 3))


def test_temperature_softmax(hub):
    hub.run_layer_test(TemperatureSoftmax, {"temperature": 2.0}, ops.ones((2, 3)), (2, 3))


def test_distillation(hub):  # called on a list, which run_layer_test cannot build from
    hub.run_serialization_test(Distillation(2.0, 0.5))
    hub.run_precision_test(Distillation, {"temperature": 2.0, "alpha": 0.5}, [ops.ones((2, 3)), ops.zeros((2, 3))])


def test_fit_images(hub):
    hub.run_layer_test(FitImages, {"height": 4, "width": 4, "channels": 3}, ops.ones((2, 2, 2, 1)), (2, 4, 4, 3))


def test_application_preprocessing(hub):
    hub.run_layer_test(ApplicationPreprocessing, {"application": "ResNet50V2"}, ops.ones((2, 2, 2, 3)), (2, 2, 2, 3))


def test_cosine_logits(hub):
    hub.run_layer_test(CosineLogits, {"units": 3}, ops.ones((2, 4)), (2, 3), expected_num_trainable_weights=2)


def test_inference_mode(hub):
    hub.run_layer_test(InferenceMode, {"layer": keras.layers.Dense(3)}, ops.ones((2, 4)), (2, 3),
                       expected_num_trainable_weights=2)


def test_leader_taps(hub):  # its precision is the Team's (below): the tap model is a leader's graph
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    taps = keras.Model(inputs, {"features": hidden, "logits": keras.layers.Dense(2, name="logits")(hidden)})
    hub.run_layer_test(LeaderTaps, {"taps": taps}, ops.ones((2, 4)), ((2, 2), {"features": (2, 3), "logits": (2, 2)}),
                       expected_num_trainable_weights=4, run_training_check=False, run_precision_checks=False)


def transferred_kwargs() -> dict:
    leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    cut = keras_team.cut_points(leader)[-3]
    return {"body": keras_team.body(leader, cut), "head": keras_team.heads.dense(3), "cut": cut}


def team_kwargs() -> dict:
    leader = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=3, head=keras_team.heads.dense(3))
    return {"leaders": {"leader": leader},
            "followers": [Follower(keras_team.zoo.mlp(3), tap="probs", distill={"temperature": 2.0})]}


def test_transferred(hub):
    x = ops.ones((2, 8, 8, 1))
    hub.run_serialization_test(Transferred(**transferred_kwargs()))
    hub.run_model_saving_test(Transferred, transferred_kwargs(), x)
    hub.check_precision(lambda dtype: Transferred(**transferred_kwargs(), dtype=dtype), x, outputs=1)


def test_team(hub):
    x = ops.ones((2, 8, 8, 1))
    hub.run_serialization_test(Team(**team_kwargs()))
    hub.run_model_saving_test(Team, team_kwargs(), x)
    hub.check_precision(lambda dtype: Team(**team_kwargs(), dtype=dtype), x, outputs=2)
    with pytest.raises(KerasTeamError):  # run_precision_test's third policy: bfloat16 variables
        Team(**team_kwargs(), dtype="bfloat16")


def test_backbone_leader_cuts_transfers_teams_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    leader = backbone_leader(4)
    blocks = [cut.name for cut in keras_team.cut_points(leader, view="blocks")]
    assert blocks == ["conv1_relu", "pool1_pool", "stack0_block0_out", "stack1_block0_out", "avg_pool"]
    x, y = images(), np.arange(8) % 3
    student = keras_team.transfer(leader, keep="stack1_block0_out", head=keras_team.heads.conv(3, filters=(8,)))
    assert student.body.output_shape == (None, 2, 2, 16) and not student.body.trainable
    before = [w.copy() for w in leader.get_weights()]
    team = Team(student, [Follower(keras_team.zoo.mlp(3), tap="features")])
    team.compile()
    team.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, leader.get_weights()))  # a copy trained, not the leader

    team.save(tmp_path / "team.keras")
    loaded = keras_team.load_model(tmp_path / "team.keras")
    assert len(loaded.trainable_weights) == len(team.trainable_weights)
    expected, got = team.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in ("leader", "mlp"):
        np.testing.assert_allclose(expected[name], got[name], rtol=1e-5, atol=1e-6)


def test_keras_hub_classifier_as_leader_keeps_its_frozen_backbone_after_load(tmp_path):
    keras.utils.set_random_seed(0)
    classifier = hub_models().ResNetImageClassifier(backbone=tiny_resnet(), num_classes=3, activation=None)
    classifier.backbone.trainable = False  # keras-hub's way of freezing a backbone
    assert [cut.name for cut in keras_team.cut_points(classifier)][:2] == [classifier.backbone.name, "pooler"]
    team = Team(classifier, [Follower(keras_team.zoo.mlp(3), tap="logits")], dtype="mixed_float16")
    copy = next(iter(team.leaders.values()))  # the team computes in float16 on a copy; the caller's model is unchanged
    assert copy is not classifier and classifier.backbone.get_layer("conv1_conv").compute_dtype == "float32"
    assert copy.backbone.get_layer("conv1_conv").compute_dtype == "float16" and not copy.backbone.trainable
    team.compile()
    team.fit(images(), np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)
    team.save(tmp_path / "team.keras")
    loaded = keras_team.load_model(tmp_path / "team.keras")
    assert len(loaded.trainable_weights) == len(team.trainable_weights) == 2 + 4  # the logits layer, the mlp
    assert loaded.leaders["leader"].backbone.get_layer("conv1_conv").compute_dtype == "float16"
