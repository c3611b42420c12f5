"""Transfer copies, freezes and unfreezes as a Keras user expects."""

import keras
import numpy as np
import pytest

import keras_team
from tests.helpers import blobs, same_weights, trained_leader, weights_of


def _fit(model, epochs=2, lr=1e-2):
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = blobs(seed=1)
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)


def test_copy_keeps_the_leader_unchanged_after_training_everything():
    leader = trained_leader()
    before = weights_of(leader)
    student = keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(5), freeze=False)
    kept_before = weights_of(student.body)
    _fit(student)
    assert same_weights(weights_of(leader), before)
    assert not same_weights(weights_of(student.body), kept_before)


def test_copy_starts_from_the_leaders_weights_and_features():
    leader = trained_leader()
    student = keras_team.transfer(leader, keep="fc2", head=keras_team.heads.dense(3))
    x, _ = blobs(n=8)
    reference = keras.Model(leader.inputs, leader.get_layer("fc2").output)
    np.testing.assert_allclose(student.body.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-6)


def test_frozen_kept_part_is_unchanged_by_fit_and_head_learns():
    student = keras_team.transfer(trained_leader(), keep=3, head=keras_team.heads.dense(5))
    body_before, head_before = weights_of(student.body), weights_of(student.head)
    _fit(student)
    assert same_weights(weights_of(student.body), body_before)
    assert not same_weights(weights_of(student.head), head_before)


def test_frozen_batch_norm_statistics_unchanged_and_in_inference_mode():
    leader = trained_leader(architecture=keras_team.zoo.residual_cnn)
    student = keras_team.transfer(leader, keep="block1_out", head=keras_team.heads.conv(5, filters=(8,)))
    keras_team.unfreeze(student, top=1)  # fine-tune block1_conv2 next to its frozen batch norm
    bn = student.body.get_layer("block1_bn2")
    stats_before = [np.array(bn.moving_mean), np.array(bn.moving_variance)]
    x, _ = blobs(n=4)
    in_training = student(x, training=True)
    in_inference = student(x, training=False)
    np.testing.assert_allclose(in_training, in_inference, rtol=1e-5, atol=1e-5)  # no dropout, BN uses moving stats
    _fit(student)
    assert np.array_equal(bn.moving_mean, stats_before[0]) and np.array_equal(bn.moving_variance, stats_before[1])


@pytest.mark.parametrize("top", [1, 2])
def test_unfreeze_top_k_trains_exactly_those_layers(top):
    student = keras_team.transfer(trained_leader(), keep=3, head=keras_team.heads.dense(5, hidden=(8,)))
    keras_team.unfreeze(student, top=top)
    body = student.body
    expected = ["fc1", "conv2"][:top]
    trained = [layer.name for layer in body.layers if keras_team.freezing.is_trained(layer, student)]
    assert sorted(trained) == sorted(expected)
    before = {layer.name: weights_of(layer) for layer in body.layers if layer.weights}
    _fit(student, epochs=1)
    changed = sorted(name for name, w in before.items() if not same_weights(weights_of(body.get_layer(name)), w))
    assert changed == sorted(expected)
    assert len(student.head.trainable_weights) == 4  # the head keeps training


def test_unfreeze_never_unfreezes_batch_norm():
    student = keras_team.transfer(trained_leader(architecture=keras_team.zoo.residual_cnn), keep=3, head=keras_team.heads.dense(5))
    keras_team.unfreeze(student)
    body = student.body
    assert all(not keras_team.freezing.is_trained(layer, student) for layer in body.layers if "bn" in layer.name)
    assert keras_team.freezing.is_trained(body.get_layer("block1_conv2"), student)


def test_unfreeze_out_of_range_names_the_allowed_range():
    student = keras_team.transfer(trained_leader(), keep=3, head=keras_team.heads.dense(5))
    with pytest.raises(keras_team.KerasTeamError, match="from 0 to 3"):
        keras_team.unfreeze(student, top=4)


def test_share_true_aliases_layers_on_purpose():
    leader = trained_leader()
    student = keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(5), freeze=False, share=True)
    assert student.body.get_layer("fc1") is leader.get_layer("fc1")
    before = weights_of(leader.get_layer("fc1"))
    _fit(student, epochs=1)
    assert not same_weights(weights_of(leader.get_layer("fc1")), before)


def test_heads_for_regression_and_bad_values():
    assert keras_team.heads.dense(2, task="regression")(np.zeros((1, 4))).shape == (1, 2)
    with pytest.raises(keras_team.KerasTeamError, match="task"):
        keras_team.heads.dense(2, task="ranking")
    with pytest.raises(keras_team.KerasTeamError, match="dropout"):
        keras_team.heads.conv(2, dropout=1.5)
    with pytest.raises(keras_team.KerasTeamError, match="head"):
        keras_team.transfer(trained_leader(epochs=1), keep=3, head="dense")


def test_conv_head_on_flat_features_is_a_clear_error():
    with pytest.raises(keras_team.KerasTeamError, match=r"shaped \(None, 120\)"):
        keras_team.transfer(trained_leader(epochs=1), keep=3, head=keras_team.heads.conv(5))


def _noisy_leader():
    """A leader with Dropout, GaussianNoise and batch norm below the cut at "d2"."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GaussianNoise(1.0, name="noise")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Dense(8, name="d2")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="noisy")


@pytest.mark.parametrize("unfrozen", [False, True])
def test_kept_part_runs_in_inference_mode_whatever_the_outer_training(unfrozen):
    leader = _noisy_leader()
    student = keras_team.transfer(leader, keep="d2", head=keras_team.heads.dense(2))
    if unfrozen:
        keras_team.unfreeze(student)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    reference = keras.Model(leader.inputs, leader.get_layer("d2").output)(x, training=False)
    np.testing.assert_allclose(keras.Model(student.inputs, student.features)(x, training=True), reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(student(x, training=True), student(x, training=False), rtol=1e-5, atol=1e-5)
    bn = student.body.get_layer("bn")
    stats = [np.array(bn.moving_mean), np.array(bn.moving_variance)]
    student.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    student.fit(x, np.arange(32) % 2, epochs=2, batch_size=8, verbose=0)
    assert np.array_equal(bn.moving_mean, stats[0]) and np.array_equal(bn.moving_variance, stats[1])
    assert keras_team.freezing.is_trained(student.body.get_layer("d2"), student) == unfrozen


def test_transferred_saves_and_loads_with_safe_mode(tmp_path):
    student = keras_team.transfer(_noisy_leader(), keep="d2", head=keras_team.heads.dense(2, hidden=(4,)))
    keras_team.unfreeze(student, top=1)
    x = np.random.default_rng(1).normal(size=(8, 6)).astype("float32")
    student.save(tmp_path / "student.keras")
    loaded = keras.models.load_model(tmp_path / "student.keras", safe_mode=True)
    assert isinstance(loaded, keras_team.Transferred)
    assert loaded.cut == student.cut
    np.testing.assert_allclose(loaded.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(loaded(x, training=True), loaded(x, training=False), rtol=1e-5, atol=1e-5)
    trained = sorted(layer.name for layer in keras_team.freezing.units(loaded) if keras_team.freezing.is_trained(layer, loaded))
    assert trained == ["d2", "hidden1", "logits"]
