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
    kept_before = weights_of(student.get_layer("body"))
    _fit(student)
    assert same_weights(weights_of(leader), before)
    assert not same_weights(weights_of(student.get_layer("body")), kept_before)


def test_copy_starts_from_the_leaders_weights_and_features():
    leader = trained_leader()
    student = keras_team.transfer(leader, keep="fc2", head=keras_team.heads.dense(3))
    x, _ = blobs(n=8)
    reference = keras.Model(leader.inputs, leader.get_layer("fc2").output)
    np.testing.assert_allclose(student.get_layer("body").predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-6)


def test_frozen_kept_part_is_unchanged_by_fit_and_head_learns():
    student = keras_team.transfer(trained_leader(), keep=3, head=keras_team.heads.dense(5))
    body_before, head_before = weights_of(student.get_layer("body")), weights_of(student.layers[-1])
    _fit(student)
    assert same_weights(weights_of(student.get_layer("body")), body_before)
    assert not same_weights(weights_of(student.layers[-1]), head_before)


def test_frozen_batch_norm_statistics_unchanged_and_in_inference_mode():
    leader = trained_leader(architecture=keras_team.zoo.residual_cnn)
    student = keras_team.transfer(leader, keep="block1_out", head=keras_team.heads.conv(5, filters=(8,)))
    keras_team.unfreeze(student, top=1)  # fine-tune block1_conv2 next to its frozen batch norm
    bn = student.get_layer("body").get_layer("block1_bn2")
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
    body = student.get_layer("body")
    expected = ["fc1", "conv2"][:top]
    trained = [layer.name for layer in body.layers if keras_team.freezing.is_trained(layer, student)]
    assert sorted(trained) == sorted(expected)
    before = {layer.name: weights_of(layer) for layer in body.layers if layer.weights}
    _fit(student, epochs=1)
    changed = sorted(name for name, w in before.items() if not same_weights(weights_of(body.get_layer(name)), w))
    assert changed == sorted(expected)
    assert len(student.layers[-1].trainable_weights) == 4  # the head keeps training


def test_unfreeze_never_unfreezes_batch_norm():
    student = keras_team.transfer(trained_leader(architecture=keras_team.zoo.residual_cnn), keep=3, head=keras_team.heads.dense(5))
    keras_team.unfreeze(student)
    body = student.get_layer("body")
    assert all(not keras_team.freezing.is_trained(layer, student) for layer in body.layers if "bn" in layer.name)
    assert keras_team.freezing.is_trained(body.get_layer("block1_conv2"), student)


def test_unfreeze_out_of_range_names_the_allowed_range():
    student = keras_team.transfer(trained_leader(), keep=3, head=keras_team.heads.dense(5))
    with pytest.raises(keras_team.KerasTeamError, match="from 0 to 3"):
        keras_team.unfreeze(student, top=4)


def test_share_true_aliases_layers_on_purpose():
    leader = trained_leader()
    student = keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(5), freeze=False, share=True)
    assert student.get_layer("body").get_layer("fc1") is leader.get_layer("fc1")
    before = weights_of(leader.get_layer("fc1"))
    _fit(student, epochs=1)
    assert not same_weights(weights_of(leader.get_layer("fc1")), before)


def test_heads_bad_values():
    with pytest.raises(keras_team.KerasTeamError, match="dropout"):
        keras_team.heads.conv(2, dropout=1.5)
    with pytest.raises(keras_team.KerasTeamError, match="head"):
        keras_team.transfer(trained_leader(epochs=1), keep=3, head="dense")


def test_conv_head_on_flat_features_is_a_clear_error():
    with pytest.raises(keras_team.KerasTeamError, match=r"shaped \(None, 120\)"):
        keras_team.transfer(trained_leader(epochs=1), keep=3, head=keras_team.heads.conv(5))
