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


@pytest.mark.large
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


def test_heads_bad_values():
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
    units = keras_team.freezing.units(loaded)
    trained = sorted(layer.name for layer in units if keras_team.freezing.is_trained(layer, loaded))
    assert trained == ["d2", "hidden1", "logits"]


class _Scale(keras.layers.Layer):  # unregistered and without get_config: cannot be rebuilt
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def call(self, x):
        return x * self.factor


def test_layers_after_the_cut_are_never_rebuilt():
    inputs = keras.Input((6,))
    kept = keras.layers.Dense(8, name="kept")(inputs)
    leader = keras.Model(inputs, keras.layers.Dense(3, name="out")(_Scale(2.0)(kept)))
    student = keras_team.transfer(leader, keep="kept", head=keras_team.heads.dense(2))
    assert [layer.name for layer in student.body.layers[1:]] == ["kept"]
    x = np.ones((2, 6), "float32")
    np.testing.assert_allclose(student.body(x), leader.get_layer("kept")(x), rtol=1e-6)
    with pytest.raises(keras_team.KerasTeamError, match="rebuilt from their configs"):
        keras_team.transfer(leader, keep="out", head=keras_team.heads.dense(2))  # the cut keeps _Scale


class _Holder(keras.layers.Layer):  # holds an object get_config cannot serialise
    def __init__(self, thing, **kwargs):
        super().__init__(**kwargs)
        self.thing = thing

    def call(self, x):
        return x


def test_an_unclonable_layer_is_a_clear_error_and_a_bug_in_the_copy_is_not_blamed_on_the_leader(monkeypatch):
    inputs = keras.Input((6,))
    leader = keras.Model(inputs, keras.layers.Dense(3, name="out")(_Holder(object(), name="held")(inputs)))
    with pytest.raises(keras_team.KerasTeamError, match="rebuilt from their configs"):
        keras_team.transfer(leader, keep="out", head=keras_team.heads.dense(2))

    def broken(model):
        raise KeyError("a bug of ours")

    monkeypatch.setattr(keras.models, "clone_model", broken)
    with pytest.raises(KeyError, match="a bug of ours"):  # not "leader ... is not valid"
        keras_team.transfer(leader, keep="out", head=keras_team.heads.dense(2))


class _TiedProjection(keras.layers.Layer):  # uses another layer's kernel: tied weights
    def __init__(self, kernel, **kwargs):
        super().__init__(**kwargs)
        self.kernel = kernel

    def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(self.kernel))


def test_tied_variables_are_refused_for_a_copy_and_kept_when_shared():
    inputs = keras.Input((6,))
    encode = keras.layers.Dense(4, name="encode")
    encoded = encode(inputs)
    decoded = _TiedProjection(encode.kernel, name="decode")(encoded)
    leader = keras.Model(inputs, keras.layers.Dense(2, name="out")(decoded), name="tied")
    with pytest.raises(keras_team.KerasTeamError, match=r"encode/kernel.*tied.*share=True"):
        keras_team.transfer(leader, keep="decode", head=keras_team.heads.dense(2))
    shared = keras_team.transfer(leader, keep="decode", head=keras_team.heads.dense(2), share=True)
    assert shared.body.get_layer("decode").kernel is shared.body.get_layer("encode").kernel


def test_share_alone_leaves_the_leader_trainable_and_trains_it():
    leader = trained_leader()
    student = keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(5), share=True)
    assert leader.get_layer("fc1").trainable and leader.trainable
    before = weights_of(leader.get_layer("fc1"))
    _fit(student, epochs=1)
    assert not same_weights(weights_of(leader.get_layer("fc1")), before)


def test_share_with_explicit_freeze_freezes_the_leaders_own_layers():
    leader = trained_leader()
    kept_weights = {w.path for name in ("conv1", "conv2", "fc1") for w in leader.get_layer(name).weights}
    keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(5), share=True, freeze=True)
    assert not any(leader.get_layer(name).trainable for name in ("conv1", "conv2", "fc1"))
    assert {w.path for w in leader.trainable_weights}.isdisjoint(kept_weights)
    assert leader.get_layer("fc2").trainable  # above the cut: untouched


def test_copy_never_changes_the_leaders_flags():
    leader = trained_leader(epochs=1)
    keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(5))
    assert all(layer.trainable for layer in leader.layers) and len(leader.trainable_weights) == 10


def _tiny_transformer_student():
    tokens = keras.Input((6,), dtype="int32")
    e = keras.layers.Embedding(20, 8, name="emb")(tokens)
    h = keras.layers.LayerNormalization(name="ln1")(
        keras.layers.Add(name="add1")([e, keras.layers.MultiHeadAttention(2, 4, name="mha")(e, e)])
    )
    f = keras.layers.Dense(8, name="ff2")(keras.layers.Dense(16, activation="relu", name="ff1")(h))
    h = keras.layers.LayerNormalization(name="ln2")(keras.layers.Add(name="add2")([h, f]))
    leader = keras.Model(tokens, keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling1D(name="pool")(h)))
    return keras_team.transfer(leader, keep="ln2", head=keras_team.heads.dense(2))


def _trained_in_body(student):
    return sorted(layer.name for layer in student.body.layers if keras_team.freezing.is_trained(layer, student))


@pytest.mark.parametrize(
    "unit, top, train_norms, expected",
    [
        ("layers", 1, ("layer",), ["ff2", "ln2"]),
        ("blocks", 1, ("layer",), ["ff1", "ff2", "ln2"]),
        ("blocks", 1, (), ["ff1", "ff2"]),
        ("blocks", 2, ("layer",), ["ff1", "ff2", "ln1", "ln2", "mha"]),
    ],
)
def test_unfreeze_transformer_by_layers_or_blocks_trains_layer_norms(unit, top, train_norms, expected):
    student = _tiny_transformer_student()
    keras_team.unfreeze(student, top=top, unit=unit, train_norms=train_norms)
    assert _trained_in_body(student) == expected


@pytest.mark.large
def test_unfreeze_by_blocks_keeps_batch_norm_frozen_unless_asked():
    leader = trained_leader(architecture=keras_team.zoo.residual_cnn, epochs=1)
    student = keras_team.transfer(leader, keep="block2_out", head=keras_team.heads.dense(5))
    keras_team.unfreeze(student, top=1, unit="blocks")
    assert _trained_in_body(student) == ["block2_conv1", "block2_conv2", "block2_project"]
    keras_team.freeze(student.body)
    keras_team.unfreeze(student, top=1, unit="blocks", train_norms=("batch",))
    assert _trained_in_body(student) == ["block2_bn1", "block2_bn2", "block2_conv1", "block2_conv2", "block2_project"]
    bn = student.body.get_layer("block2_bn1")
    stats = np.array(bn.moving_mean)
    _fit(student, epochs=1)
    np.testing.assert_array_equal(bn.moving_mean, stats)  # trained scale/offset, statistics kept (inference mode)


def test_rms_and_spectral_normalisation():
    leader = keras.Sequential([
        keras.Input((6,)),
        keras.layers.SpectralNormalization(keras.layers.Dense(8), name="sn"),
        keras.layers.RMSNormalization(name="rms"),
        keras.layers.Dense(8, name="d2"),
        keras.layers.Dense(3, name="out"),
    ])
    assert [(c.name, c.depth) for c in keras_team.cut_points(leader)] == [("sn", 1), ("rms", 1), ("d2", 2), ("out", 3)]
    student = keras_team.transfer(leader, keep="d2", head=keras_team.heads.dense(2))
    keras_team.unfreeze(student)
    assert _trained_in_body(student) == ["d2", "rms", "sn"]
    keras_team.freeze(student.body)
    keras_team.unfreeze(student, train_norms=())
    assert _trained_in_body(student) == ["d2"]


@pytest.mark.parametrize("kwargs, field", [({"unit": "stages"}, "unit"), ({"train_norms": ("bn",)}, "train_norms")])
def test_unfreeze_bad_options_name_the_field(kwargs, field):
    with pytest.raises(keras_team.KerasTeamError) as error:
        keras_team.unfreeze(keras_team.zoo.seed_cnn((8, 8, 1), 5), **kwargs)
    assert error.value.field == field


def test_body_trained_from_scratch_can_follow_the_outer_training():
    student = keras_team.transfer(_noisy_leader(), keep="d2", head=keras_team.heads.dense(2), freeze=False,
                                  inference_mode=False)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    assert not np.allclose(student(x, training=True), student(x, training=False))  # dropout and noise active
    bn = student.body.get_layer("bn")
    stats = np.array(bn.moving_mean)
    student.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    student.fit(x, np.arange(32) % 2, epochs=1, batch_size=8, verbose=0)
    assert not np.array_equal(bn.moving_mean, stats)
    assert keras_team.Transferred.from_config(student.get_config()).inference_mode is False
