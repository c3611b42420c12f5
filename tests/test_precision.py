"""Mixed precision passed the Keras way: `Team(..., dtype=...)`, `transfer(..., dtype=...)`."""

import keras
import numpy as np
import pytest

import keras_team
from keras_team import Follower, KerasTeamError, Team
from keras_team.layers import Distillation


def test_distillation_loss_is_finite_in_float16():
    """A confident teacher has probabilities below float16's range: the KL must not become NaN."""
    layer = Distillation(temperature=1.0, alpha=0.5, dtype="mixed_float16")
    student, teacher = np.zeros((2, 3), "float32"), np.array([[30.0, -30.0, 0.0]] * 2, "float32")
    out = layer([student, teacher], training=True)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert np.isfinite(float(layer.losses[0])) and float(layer.losses[0]) > 0


def test_team_dtype_leaves_the_callers_leader_unchanged():
    """`Team(dtype=...)` sets the policy on copies, as `transfer(dtype=...)` does: the caller's leader keeps
    its policies and weights, and the team starts from the same weights."""
    leader = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=3, head=keras_team.heads.dense(3))
    before = [w.copy() for w in leader.get_weights()]
    team = Team(leader, dtype="mixed_bfloat16")
    assert {layer.dtype_policy.name for layer in keras_team.graph.sublayers(leader)} == {"float32"}
    assert team.leaders["leader"] is not leader
    assert team.leaders["leader"].body.get_layer("conv1").compute_dtype == "bfloat16"
    for old, new, copied in zip(before, leader.get_weights(), team.leaders["leader"].get_weights()):
        np.testing.assert_array_equal(old, new)
        np.testing.assert_array_equal(old, copied)
    assert not team.leaders["leader"].body.trainable  # the copy keeps the frozen body


@pytest.mark.large
def test_team_computes_in_its_dtype_and_keeps_it_after_load(tmp_path):
    keras.utils.set_random_seed(0)
    leader = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=3, head=keras_team.heads.dense(3))
    team = Team(leader, [Follower(keras_team.zoo.mlp(3), tap="probs", distill={"temperature": 2.0})],
                dtype="mixed_float16")
    layer = team.leaders["leader"].body.get_layer("conv1")
    assert layer.compute_dtype == "float16" and layer.variable_dtype == "float32"
    assert team.leaders["leader"].head.get_layer("logits").compute_dtype == "float32"
    assert team.follower_graphs["mlp"].get_layer("distill").compute_dtype == "float16"
    x, y = np.random.default_rng(0).uniform(0, 16, (16, 8, 8, 1)).astype("float32"), np.arange(16) % 3
    outputs = team(x)
    assert {name: keras.backend.standardize_dtype(t.dtype) for name, t in outputs.items()} == {
        "leader": "float32", "mlp": "float32"}
    spec = team.compute_output_spec(keras.KerasTensor((None, 8, 8, 1)))
    assert {name: s.dtype for name, s in spec.items()} == {"leader": "float32", "mlp": "float32"}
    team.compile()
    assert isinstance(team.optimizer, keras.optimizers.LossScaleOptimizer)  # Keras scales the loss for float16
    history = team.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))

    team.save(tmp_path / "team.keras")
    loaded = keras_team.load_model(tmp_path / "team.keras")
    assert loaded.dtype_policy.name == "mixed_float16"
    assert loaded.leaders["leader"].body.get_layer("conv1").compute_dtype == "float16"
    assert loaded.leaders["leader"].head.get_layer("logits").compute_dtype == "float32"
    expected, got = team.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in expected:
        np.testing.assert_array_equal(expected[name], got[name])


@pytest.mark.large
def test_transfer_dtype_and_refused_policies():
    leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    model = keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(3), dtype="mixed_bfloat16")
    assert model.body.get_layer("conv2").compute_dtype == "bfloat16"
    assert leader.get_layer("conv2").compute_dtype == "float32"  # the copy changed, not the leader
    assert keras.backend.standardize_dtype(model(np.zeros((2, 8, 8, 1))).dtype) == "float32"
    assert model.get_config()["dtype"] == "mixed_bfloat16"
    for dtype in ("bfloat16", "float16", "int8"):
        with pytest.raises(KerasTeamError, match="dtype"):
            Team(leader, dtype=dtype)
