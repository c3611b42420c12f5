"""Cut points and `keep` on every kind of graph a leader can have."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_team
from keras_team.cuts import resolve_cut
from keras_team.taps import tap_tensor


def _names_at(model, depth):
    return [c.name for c in keras_team.cut_points(model) if c.depth == depth]


def test_sequential_every_layer_is_a_cut():
    leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    cuts = keras_team.cut_points(leader)
    assert [c.name for c in cuts] == [layer.name for layer in leader.layers]
    assert [c.depth for c in cuts] == [0, 1, 1, 2, 2, 2, 3, 4, 5]
    assert cuts[-3].output_shape == (None, 120)


def test_write_up_keep_3_keeps_conv1_conv2_fc1():
    leader = keras_team.zoo.seed_cnn((32, 32, 3), 10)
    kept = keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(100)).body
    weighted = [layer.name for layer in kept.layers if layer.weights]
    assert weighted == ["conv1", "conv2", "fc1"]
    assert kept.output_shape == (None, 120)


def test_keep_n_keeps_pooling_and_flatten_after_layer_n():
    assert resolve_cut(keras_team.zoo.seed_cnn((8, 8, 1), 5), 2).name == "flatten"


def test_residual_graph_has_no_cut_inside_a_block():
    model = keras_team.zoo.residual_cnn((8, 8, 1), 5)
    names = [c.name for c in keras_team.cut_points(model)]
    assert "block1_out" in names and "block2_out" in names
    assert not [n for n in names if n.startswith("block") and not n.endswith(("_out", "_add"))]
    assert "block1_add" in names  # the add itself joins the block: everything flows through it


def test_residual_keep_inside_block_lists_valid_depths():
    model = keras_team.zoo.residual_cnn((8, 8, 1), 5)
    with pytest.raises(keras_team.KerasTeamError) as error:
        keras_team.transfer(model, keep=2, head=keras_team.heads.dense(3))
    assert error.value.field == "keep"
    assert "1, 3, 6, 7" in str(error.value)


def test_nested_application_is_one_unit_counting_its_weighted_layers():
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35)
    inputs = keras.Input((32, 32, 3))
    x = layers.GlobalAveragePooling2D(name="gap")(base(layers.Rescaling(1 / 127.5, -1, name="scale")(inputs)))
    model = keras.Model(inputs, layers.Dense(10, name="logits")(x))
    inner = sum(1 for layer in base.layers if any(w.path.endswith("kernel") for w in layer.weights))  # convs
    cuts = {c.name: c.depth for c in keras_team.cut_points(model)}
    assert cuts == {"scale": 0, base.name: inner, "gap": inner, "logits": inner + 1}
    assert resolve_cut(model, inner).name == "gap"


def test_recurrent_stack():
    model = keras.Sequential(
        [
            keras.Input((10,), dtype="int32"),
            layers.Embedding(50, 8, name="emb"),
            layers.LSTM(16, return_sequences=True, name="lstm"),
            layers.GRU(16, name="gru"),
            layers.Dense(3, name="out"),
        ]
    )
    assert [(c.name, c.depth) for c in keras_team.cut_points(model)] == [
        ("emb", 1), ("lstm", 2), ("gru", 3), ("out", 4)
    ]
    transferred = keras_team.transfer(model, keep="lstm", head=keras_team.heads.dense(2))
    assert transferred.body.output_shape == (None, 10, 16)


def tiny_transformer():
    tokens = keras.Input((10,), dtype="int32")
    e = layers.Embedding(50, 16, name="emb")(tokens)
    h = layers.LayerNormalization(name="ln1")(layers.Add(name="add1")([e, layers.MultiHeadAttention(2, 8, name="mha")(e, e)]))
    f = layers.Dense(16, name="ff2")(layers.Dense(32, activation="relu", name="ff1")(h))
    h = layers.LayerNormalization(name="ln2")(layers.Add(name="add2")([h, f]))
    pooled = layers.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(tokens, layers.Dense(3, name="out")(pooled))


def test_transformer_encoder_cuts_only_between_blocks():
    assert [(c.name, c.depth) for c in keras_team.cut_points(tiny_transformer())] == [
        ("emb", 1), ("add1", 2), ("ln1", 2), ("add2", 4), ("ln2", 4), ("pool", 4), ("out", 5)
    ]
    assert resolve_cut(tiny_transformer(), 2).name == "ln1"  # normalisation is not weighted


@pytest.mark.parametrize("keep", [0, 9, "conv9", 2.5, True])
def test_invalid_keep_lists_valid_values(keep):
    with pytest.raises(keras_team.KerasTeamError) as error:
        keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=keep, head=keras_team.heads.dense(3))
    assert error.value.field == "keep"
    message = str(error.value)
    assert repr(keep) in message
    if isinstance(keep, str):
        assert "conv1, pool1" in message
    elif isinstance(keep, int) and not isinstance(keep, bool):
        assert "1, 2, 3, 4, 5" in message


def test_subclassed_model_is_refused_clearly():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(keras_team.KerasTeamError, match="subclassed"):
        keras_team.cut_points(Subclassed())


def _ops_leader():
    inputs = keras.Input((6,))
    x = keras.ops.relu(layers.Dense(8, name="d1")(inputs))
    x = layers.Dense(8, name="d2")(x)
    return keras.Model(inputs, layers.Dense(3, name="out")(x), name="ops_leader")


def test_keras_ops_calls_are_part_of_the_graph():
    leader = _ops_leader()
    assert [(c.name, c.depth) for c in keras_team.cut_points(leader)] == [("d1", 1), ("relu", 1), ("d2", 2), ("out", 3)]
    student = keras_team.transfer(leader, keep=1, head=keras_team.heads.dense(2))
    assert student.cut.name == "relu"  # the activation after layer 1 is kept
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    reference = keras.Model(leader.inputs, leader.get_layer("d2").input)
    np.testing.assert_allclose(student.body(x), reference(x), rtol=1e-6)
    assert np.all(student.body(x) >= 0)


def _twice_leader():
    inputs = keras.Input((4,))
    shared = layers.Dense(4, activation="tanh", name="shared")
    x = shared(shared(inputs))
    return keras.Model(inputs, layers.Dense(2, name="out")(x), name="twice")


def test_layer_called_twice_is_refused_by_name_and_chosen_by_cut_point():
    leader = _twice_leader()
    cuts = keras_team.cut_points(leader)
    assert [(c.name, c.depth, c.position) for c in cuts] == [("shared", 1, 0), ("shared", 1, 1), ("out", 2, 2)]
    with pytest.raises(keras_team.KerasTeamError, match=r"called at 2 cut points.*cut_points\(model\)\[0\].*\[1\]"):
        resolve_cut(leader, "shared")
    student = keras_team.transfer(leader, keep=cuts[0], head=keras_team.heads.dense(2))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(student.body(x), leader.get_layer("shared")(x), rtol=1e-6)  # one call, not two


def test_layer_called_twice_stays_one_layer_in_the_copy():
    leader = _twice_leader()
    student = keras_team.transfer(leader, keep=keras_team.cut_points(leader)[1], head=keras_team.heads.dense(2))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    shared = leader.get_layer("shared")
    np.testing.assert_allclose(student.body(x), shared(shared(x)), rtol=1e-6)
    assert len(student.body.weights) == 2  # one kernel and one bias, used by both calls


def test_numpy_integer_depths_are_accepted():
    leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    assert resolve_cut(leader, np.int64(3)).name == "fc1"
    student = keras_team.transfer(leader, keep=np.int32(3), head=keras_team.heads.dense(2))
    keras_team.unfreeze(student, top=np.int64(1))
    assert keras_team.freezing.is_trained(student.body.get_layer("fc1"), student)
    assert not keras_team.freezing.is_trained(student.body.get_layer("conv2"), student)


def _ending_in(last):
    inputs = keras.Input((4,))
    x = layers.Dense(3, name="dense", activation="sigmoid" if last == "dense" else None)(inputs)
    if last == "layer":
        x = layers.Activation("sigmoid", name="act")(x)
    elif last == "op":
        x = keras.ops.sigmoid(x)
    return keras.Model(inputs, x, name="multilabel")


@pytest.mark.parametrize("last", ["dense", "layer", "op"])
@pytest.mark.parametrize("tap", ["logits", "probs"])
def test_leader_ending_in_sigmoid_has_no_logits_tap(last, tap):
    with pytest.raises(keras_team.KerasTeamError, match="sigmoid"):
        tap_tensor(_ending_in(last), tap)


def test_separate_softmax_is_looked_through_for_logits():
    inputs = keras.Input((4,))
    logits = layers.Dense(3, name="dense")(inputs)
    for probs in (layers.Softmax(name="sm")(logits), keras.ops.softmax(logits)):
        leader = keras.Model(inputs, probs)
        assert tap_tensor(leader, "logits") is logits


def test_multi_output_leader_is_refused_for_taps_but_can_be_cut():
    inputs = keras.Input((4,))
    trunk = layers.Dense(8, name="trunk")(inputs)
    leader = keras.Model(inputs, [layers.Dense(3, name="a")(trunk), layers.Dense(2, name="b")(trunk)], name="two_heads")
    with pytest.raises(keras_team.KerasTeamError, match="one output to tap; it has 2"):
        tap_tensor(leader, "logits")
    assert [c.name for c in keras_team.cut_points(leader)] == ["trunk"]
    assert keras_team.transfer(leader, keep="trunk", head=keras_team.heads.dense(2)).output_shape == (None, 2)


def test_features_tap_of_a_transferred_leader_is_its_cut():
    student = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=2, head=keras_team.heads.dense(3, hidden=(4,)))
    features = tap_tensor(student, "features")
    assert features is student.features and tuple(features.shape) == student.cut.output_shape == (None, 64)


def test_graph_adapter_warns_under_a_keras_it_was_not_read_for():
    from keras_team import graph

    with pytest.warns(RuntimeWarning, match=r"read for Keras 3\.15\.x; this is 3\.99\.0: cuts and resumed fits"):
        assert not graph.check_version("3.99.0")  # both of its private uses are named
    assert graph.check_version(keras.__version__)  # the installed Keras is one it was read for: no warning
