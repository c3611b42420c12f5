"""The Team behaves as one Keras model whose followers read their leaders' taps."""

import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_team
from keras_team import Distill, Follower, KerasTeamError, Team
from tests.helpers import blobs, same_weights, weights_of

SCCE = keras.losses.sparse_categorical_crossentropy


@pytest.fixture(scope="module")
def source():
    """A source-task leader with logits far from uniform (only read: transfer copies it).

    Its scaling of 1/10 (not 1/255) spreads the logits the way training would,
    so temperatures and distillation give non-trivial numbers without a fit.
    """
    keras.utils.set_random_seed(0)
    return keras_team.zoo.seed_cnn((8, 8, 1), 5, scale=1 / 10)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def transferred(keep=3, classes=5, source=None, **kwargs):
    source = source or keras_team.zoo.seed_cnn((8, 8, 1), 5)
    return keras_team.transfer(source, keep=keep, head=keras_team.heads.dense(classes), **kwargs)


def mlp(classes=5, name="mlp"):
    return keras_team.zoo.mlp(classes, hidden=(16,), name=name)


def softmax(logits, temperature=1.0):
    z = logits / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def tf_dataset(x, y=None, batch_size=4):
    y = np.zeros(len(x), "int32") if y is None else y
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def reference_loss(y, logits):
    return float(np.mean(SCCE(y, logits, from_logits=True)))


# --- 1-3: input widths come from the taps -------------------------------------------------


@pytest.mark.parametrize(
    "leader, tap, shape",
    [
        ("transferred", "features", (120,)),  # keep=3 on the seed CNN: the fc1 cut
        ("transferred", "logits", (5,)),
        ("transferred", "probs", (5,)),
        ("transferred", "body", (120,)),
        ("raw", "features", (84,)),  # input of fc3
        ("raw", "fc1", (120,)),
        ("raw", "pool2", (2, 2, 16)),
        ("transferred", ["pool1", "pool2"], (6 + 16,)),  # cuts inside the body, average-pooled and joined
    ],
)
def test_follower_input_shape_is_derived_from_the_tap(leader, tap, shape):
    leader = transferred() if leader == "transferred" else keras_team.zoo.seed_cnn((8, 8, 1), 5)
    follower = Follower(mlp(3), tap=tap)
    team = Team(leader, [follower])
    assert follower.model.input_shape == (None, *shape)
    assert tuple(team.get_layer("mlp").output.shape) == (None, 3)


@pytest.mark.large
def test_a_multi_scale_follower_reads_cuts_inside_the_body_trains_on_cached_taps_and_round_trips(tmp_path, source):
    leader = transferred(source=source)
    team = Team(leader, [Follower(mlp(name="scales"), tap=["conv1", "pool2", "features"])])
    x, y = blobs(n=12, seed=2)
    taps = keras_team.caching.cache_taps(team, "scales", tf_dataset(x), verbose=0).inputs
    for cut in ("conv1", "pool2"):  # each tap is that layer's output inside the body
        inner = keras.Model(leader.body.inputs, leader.body.get_layer(cut).output)
        np.testing.assert_allclose(np.asarray(taps[f"leader_{cut}"]), inner.predict(x, verbose=0), rtol=1e-5)
    history = keras_team.caching.fit_follower(team, "scales", tf_dataset(x, y), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    team.save(tmp_path / "team.keras")
    loaded = keras_team.load_model(tmp_path / "team.keras")
    assert loaded.followers[0].tap == ["conv1", "pool2", "features"]
    before, after = team.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in ("leader", "scales"):
        np.testing.assert_allclose(after[name], before[name], rtol=1e-5, atol=1e-6)


def test_probs_tap_is_softmax_of_leader_logits_at_temperature(source):
    x, _ = blobs(n=16, seed=2)
    team = Team(source, [Follower(keras.layers.Identity(name="soft"), tap="probs", temperature=2.5)])
    predicted = team.predict(x, verbose=0)
    logits = source.predict(x, verbose=0)
    assert np.ptp(logits) > 1.0  # a trained leader: the temperature matters
    np.testing.assert_allclose(predicted["leader"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predicted["soft"], softmax(logits, 2.5), rtol=1e-5, atol=1e-6)


def test_concat_over_two_leaders_sums_their_widths():
    concat = Follower(mlp(name="both"))
    only_b = Follower(mlp(name="only_b"), leaders=["b"])
    logits = Follower(mlp(name="logits_both"), tap="logits")
    Team({"a": transferred(keep=3), "b": transferred(keep=4)}, [concat, only_b, logits])
    assert concat.model.input_shape == (None, 120 + 84)
    assert only_b.model.input_shape == (None, 84)
    assert logits.model.input_shape == (None, 5 + 5)


def test_concat_joins_the_taps_in_the_order_of_the_followers_leaders(source):
    x, _ = blobs(n=8, seed=5)
    a, b = transferred(keep=3, source=source), transferred(keep=4, source=source)
    team = Team({"a": a, "b": b}, [
        Follower(keras.layers.Identity(name="ab"), tap="logits"),
        Follower(keras.layers.Identity(name="ba"), tap="logits", leaders=["b", "a"]),
    ])
    predicted = team.predict(x, verbose=0)
    logits_a, logits_b = a.predict(x, verbose=0), b.predict(x, verbose=0)
    assert not np.allclose(logits_a, logits_b)
    np.testing.assert_allclose(predicted["ab"], np.concatenate([logits_a, logits_b], -1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predicted["ba"], np.concatenate([logits_b, logits_a], -1), rtol=1e-5, atol=1e-6)


# --- 4: "each" and the team loss -----------------------------------------------------------


def test_each_gives_one_output_per_leader_and_the_team_loss_is_the_sum():
    x, y = blobs(seed=1)
    team = Team({"a": transferred(), "b": transferred()}, [Follower(mlp(name="f"), combine="each")])
    assert sorted(team.output_names) == ["a", "b", "f_a", "f_b"]
    assert team.member_names == ["a", "b", "f"]
    team.compile()
    result = team.evaluate(x, y, return_dict=True, verbose=0)
    parts = [result[f"{name}_loss"] for name in ("a", "b", "f_a", "f_b")]
    assert result["loss"] == pytest.approx(sum(parts), rel=1e-5)
    predicted = team.predict(x, verbose=0)
    assert not np.allclose(predicted["f_a"], predicted["f_b"])  # same weights, different leaders
    for name in ("a", "b", "f_a", "f_b"):
        assert result[f"{name}_loss"] == pytest.approx(reference_loss(y, predicted[name]), rel=1e-5)
        # each output keeps its own metric state
        assert result[f"{name}_accuracy"] == pytest.approx(np.mean(predicted[name].argmax(-1) == y))


def test_loss_weights_scale_the_members_and_a_follower_name_sets_all_its_outputs():
    x, y = blobs(seed=1)
    team = Team({"a": transferred(), "b": transferred()}, [Follower(mlp(name="f"), combine="each")])
    team.compile(loss_weights={"a": 0.5, "f": 2.0})
    result = team.evaluate(x, y, return_dict=True, verbose=0)
    expected = 0.5 * result["a_loss"] + result["b_loss"] + 2.0 * (result["f_a_loss"] + result["f_b_loss"])
    assert result["loss"] == pytest.approx(expected, rel=1e-5)


# --- 5: saving --------------------------------------------------------------------------------


# Saved before any fit, the optimizer has no slots yet; Keras warns it has none to load.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_save_and_load_round_trips_every_member_and_stays_compiled(tmp_path, source):
    x, y = blobs(n=48, seed=3)
    followers = [
        Follower(mlp(name="dist"), distill=Distill(temperature=2.0, student_loss_weight=0.7)),
        Follower(mlp(name="soft"), leaders=["a"], tap="probs", temperature=3.0),
        Follower(mlp(name="each"), tap="logits", combine="each"),
    ]
    team = Team({"a": transferred(source=source), "b": transferred(source=source)}, followers)
    team.compile(keras.optimizers.Adam(1e-2), loss_weights={"a": 0.5})
    team.save(tmp_path / "team.keras")
    loaded = keras.models.load_model(tmp_path / "team.keras")  # safe_mode on, no custom_objects
    assert isinstance(loaded, Team)
    assert loaded.member_names == ["a", "b", "dist", "soft", "each"]
    before, after = team.predict(x, verbose=0), loaded.predict(x, verbose=0)
    assert sorted(after) == sorted(before) == ["a", "b", "dist", "each_a", "each_b", "soft"]
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6, atol=1e-6)
    expected = team.evaluate(x, y, return_dict=True, verbose=0)
    assert loaded.evaluate(x, y, return_dict=True, verbose=0) == pytest.approx(expected, rel=1e-5)
    assert loaded.loss_weight_defaults() == team.loss_weight_defaults()


# --- 6-7: training ------------------------------------------------------------------------------


def test_fit_with_labels_given_once_lowers_every_members_loss(source):
    x, y = blobs(seed=1)
    followers = [Follower(mlp(name="feat")), Follower(mlp(name="lg"), tap="logits"),
                 Follower(mlp(name="soft"), tap="probs", temperature=2.0)]
    team = Team(transferred(source=source), followers)
    team.compile(keras.optimizers.Adam(1e-2))
    before = team.evaluate(x, y, return_dict=True, verbose=0)
    team.fit(x, y, epochs=4, batch_size=16, verbose=0)
    after = team.evaluate(x, y, return_dict=True, verbose=0)
    for name in team.member_names:
        assert after[f"{name}_loss"] < 0.8 * before[f"{name}_loss"], name


def test_follower_gradients_never_reach_the_leader(source):
    x, y = blobs(seed=1)
    leader = transferred(source=source, freeze=False)  # body and head trainable
    assert len(leader.trainable_weights) == len(leader.weights)
    follower = Follower(mlp(name="f"), tap="logits")  # reads the head's output
    team = Team(leader, [follower])
    team.compile(keras.optimizers.Adam(1e-2), loss_weights={"leader": 0.0})
    leader_before, follower_before = weights_of(leader), weights_of(follower.model)
    team.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert same_weights(weights_of(leader), leader_before)
    assert not same_weights(weights_of(follower.model), follower_before)


# --- 8: distillation ------------------------------------------------------------------------------


@pytest.mark.parametrize("tap", ["features", "probs"])
def test_distillation_weighs_labels_and_t2_kl_as_keras_distiller_while_training_only(source, tap):
    x, y = blobs(n=32, seed=4)
    t, student_loss_weight = 3.0, 0.6
    alpha = 1 - student_loss_weight  # Keras' Distiller: (1 - student_loss_weight) * T^2 * KL
    team = Team(source, [Follower(mlp(name="student"), tap=tap,
                                  distill=Distill(temperature=t, student_loss_weight=student_loss_weight))])
    predicted = {name: np.array(value) for name, value in team(x).items()}
    assert team.losses == []  # inference and serving: no teacher softmax, no KL
    team(x, training=True)
    (added,) = team.losses
    teacher, student = softmax(source.predict(x, verbose=0), t), softmax(predicted["student"], t)
    kl = np.sum(teacher * (np.log(teacher) - np.log(student)), axis=-1)
    expected = alpha * t * t * np.mean(kl)
    assert expected > 1e-3
    assert float(added) == pytest.approx(expected, rel=1e-4)

    assert team.loss_weight_defaults() == {"leader": 1.0, "student": pytest.approx(student_loss_weight)}
    team.compile(keras.optimizers.SGD(0.0))  # a training step that changes nothing
    result = team.evaluate(x, y, batch_size=len(x), return_dict=True, verbose=0)
    assert result["student_loss"] == pytest.approx(reference_loss(y, predicted["student"]), rel=1e-5)
    label_losses = result["leader_loss"] + student_loss_weight * result["student_loss"]
    assert result["loss"] == pytest.approx(label_losses, rel=1e-5)  # evaluate adds no distillation
    history = team.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(label_losses + expected, rel=1e-4)


def test_distillation_with_each_adds_one_term_per_leader():
    team = Team({"a": transferred(), "b": transferred()},
                [Follower(mlp(name="f"), combine="each", distill=Distill(student_loss_weight=0.75))])
    team(blobs(n=4)[0], training=True)
    assert len(team.losses) == 2
    assert team.loss_weight_defaults() == {"a": 1.0, "b": 1.0, "f_a": 0.75, "f_b": 0.75}


def test_a_follower_saved_with_distill_alpha_loads_with_the_same_weights():
    config = Follower(mlp(name="f"), distill=Distill(temperature=2.0)).get_config()
    config["distill"] = {"temperature": 2.0, "alpha": 0.25}  # as teams were saved before student_loss_weight
    assert Follower.from_config(config).distill == Distill(temperature=2.0, student_loss_weight=0.75)


# --- 9: clear errors --------------------------------------------------------------------------------


def _built(layer, width):
    layer.build((None, width))
    return layer


def _softmax_leader():
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5, activation="softmax")])


ERRORS = {
    "unknown tap": (
        lambda: Team(transferred(), [Follower(mlp(), tap="nope")]),
        "followers[mlp].tap", ["features, logits, probs, body, head"],
    ),
    "unknown leader": (
        lambda: Team({"a": transferred(), "b": transferred()}, [Follower(mlp(), leaders=["a", "c"])]),
        "followers[mlp].leaders", ["'c'", "a, b"],
    ),
    "distill class count": (
        lambda: Team(transferred(classes=5), [Follower(mlp(3), distill=Distill())]),
        "followers[mlp].distill", ["3 classes", "(5)"],
    ),
    "built model, wrong width": (
        lambda: Team(transferred(), [Follower(_built(mlp(), 7))]),
        "followers[mlp].model", ["(7,)", "(120,)"],
    ),
    "built layer, wrong width": (
        lambda: Team(transferred(), [Follower(_built(keras.layers.Dense(5, name="dense"), 7))]),
        "followers[dense].model", ["(120,)"],
    ),
    "duplicate follower": (
        lambda: Team(transferred(), [Follower(mlp()), Follower(mlp())]),
        "followers", ["'mlp'", "leader, mlp"],
    ),
    "follower named like a leader": (
        lambda: Team(transferred(), [Follower(mlp(), name="leader")]),
        "followers", ["'leader'", "(leader)"],
    ),
    "leaders with one name": (
        lambda: Team([transferred(), transferred()]),
        "leaders", ["seed_cnn_transfer", "distinct names"],
    ),
    "output name taken": (
        lambda: Team({"a": transferred(), "b": transferred()},
                     [Follower(mlp(), name="f_a"), Follower(mlp(), name="f", combine="each")]),
        "followers", ["'f'", "f_a"],
    ),
    "leaders with different inputs": (
        lambda: Team({"a": transferred(), "b": keras_team.zoo.seed_cnn((16, 16, 1), 5)}),
        "leaders", ["(8, 8, 1)", "(16, 16, 1)", "same input shape"],
    ),
    "softmax-ended leader (members output logits)": (
        lambda: Team(_softmax_leader(), [Follower(mlp(), tap="features")]),
        "leaders[leader]", ["softmax", "linear layer"],
    ),
    "negative loss weight": (
        lambda: Team(transferred(), [Follower(mlp())]).compile(loss_weights={"mlp": -0.5}),
        "loss_weights[mlp]", ["-0.5", "finite number >= 0"],
    ),
    "NaN loss weight": (
        lambda: Team(transferred(), [Follower(mlp())]).compile(loss_weights={"leader": float("nan")}),
        "loss_weights[leader]", ["nan", "finite number >= 0"],
    ),
    "follower named like the leader's taps layer": (
        lambda: Team(transferred(), [Follower(mlp(), name="leader_taps")]),
        "followers", ["'leader_taps'", "the taps of leader 'leader'"],
    ),
    "follower named like another follower's sub-model": (
        lambda: Team(transferred(), [Follower(mlp()), Follower(mlp(name="g"), name="mlp_graph")]),
        "followers", ["'mlp_graph'", "sub-model of follower 'mlp'"],
    ),
    "follower named like a layer of its own graph": (
        lambda: Team(transferred(), [Follower(mlp(name="probs"), tap="probs")]),
        "followers", ["'probs'", "temperature softmax"],
    ),
    "follower model named like an input of its graph": (
        lambda: Team(transferred(), [Follower(mlp(name="leader_logits"), name="f", tap="logits")]),
        "followers[f].model", ["'leader_logits'", "an input of the follower's graph"],
    ),
    "leader named like a stop-gradient layer": (
        lambda: Team({"a": transferred(), "a_logits_stop": transferred()}),
        "leaders", ["'a_logits_stop'", "stop-gradient"],
    ),
    "unknown tap: the body's cuts are listed": (
        lambda: Team(transferred(), [Follower(mlp(), tap=["pool1", "pool9"])]),
        "followers[mlp].tap", ["'pool9'", "features, logits, probs", "a cut of its body", "conv1", "pool2"],
    ),
    "unknown head activation": (
        lambda: keras_team.heads.dense(3, hidden=(8,), activation="relux"),
        "activation", ["'relux'", "gelu", "relu", "softmax"],
    ),
    "unknown follower activation": (
        lambda: keras_team.zoo.mlp(3, activation="relux"),
        "activation", ["'relux'", "gelu", "relu"],
    ),
    "follower dropout out of range": (
        lambda: keras_team.zoo.mlp(3, dropout=1.5),
        "dropout", ["1.5", "[0, 1)"],
    ),
    "unknown loss weight": (
        lambda: Team({"a": transferred(), "b": transferred()}, [Follower(mlp(name="f"), combine="each")]).compile(
            loss_weights={"g": 1.0}
        ),
        "loss_weights", ["'g'", "a, b, f, f_a, f_b"],
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_name_the_field_and_what_is_allowed(case):
    build, field, phrases = ERRORS[case]
    with pytest.raises(KerasTeamError) as error:
        build()
    assert error.value.field == field
    for phrase in phrases:
        assert phrase in str(error.value)


def test_fit_on_no_examples_is_a_clear_error():
    team = Team(transferred(), [Follower(mlp())])
    team.compile()
    with pytest.raises(KerasTeamError, match="at least one example") as error:
        team.fit(np.zeros((0, 8, 8, 1), "uint8"), np.zeros((0,), "int32"), verbose=0)
    assert error.value.field == "x"


@pytest.mark.parametrize("label, where", [(5, "y"), (-1, "y"), (7, "validation_data[1]")])
def test_out_of_range_label_is_one_line_naming_the_label_and_the_range(label, where):
    x, y = blobs(n=8)
    team = Team(transferred(classes=5), [Follower(mlp())])
    team.compile()
    bad = y.copy()
    bad[3] = label
    labels, validation = (bad, (x, y)) if where == "y" else (y, (x, bad))
    with pytest.raises(KerasTeamError) as error:
        team.fit(x, labels, validation_data=validation, epochs=1, verbose=0)
    assert error.value.field == where
    assert str(error.value) == f"{where}={label} is not valid: expected class labels in [0, 4] ('leader' has 5 classes)"


def test_team_keeps_its_name_through_save_and_load(tmp_path):
    team = Team(transferred(), [Follower(mlp())], name="my_team")
    assert team.name == "my_team"
    team.save(tmp_path / "team.keras")
    assert keras.models.load_model(tmp_path / "team.keras").name == "my_team"


LOAD = """
import sys, numpy as np, keras, keras_team
x = np.load(sys.argv[1] + "/x.npy")
for name in ("team", "transferred", "follower_graph"):
    model = keras.models.load_model(sys.argv[1] + f"/{name}.keras")  # `import keras_team` registered the classes
    outputs = model.predict(x, verbose=0) if name != "follower_graph" else model(dict(np.load(sys.argv[1] + "/taps.npz")))
    outputs = outputs if isinstance(outputs, dict) else {"out": keras.tree.flatten(outputs)[0]}
    np.savez(sys.argv[1] + f"/{name}_loaded.npz", **{k: np.asarray(v) for k, v in outputs.items()})
    print(name, type(model).__name__)
"""


@pytest.mark.large
def test_saved_team_follower_graph_and_transferred_model_load_in_a_fresh_process(tmp_path, source):
    x, _ = blobs(n=6, seed=7)
    leader = transferred(source=source)
    team = Team(leader, [Follower(mlp(name="dist"), tap="probs", temperature=2.0, distill=Distill())])
    graph = team.follower_graphs["dist"]  # TemperatureSoftmax and Distillation layers
    taps = {key: np.asarray(value) for key, value in keras_team.caching.cache_taps(
        team, "dist", tf_dataset(x), verbose=0).inputs.items()}
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "taps.npz", **taps)
    team.save(tmp_path / "team.keras")
    leader.save(tmp_path / "transferred.keras")
    graph.save(tmp_path / "follower_graph.keras")
    expected = {
        "team": team.predict(x, verbose=0),
        "transferred": {"out": leader.predict(x, verbose=0)},
        "follower_graph": {"out": np.asarray(keras.tree.flatten(graph(taps))[0])},
    }
    root = pathlib.Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path)], cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["team", "Team", "transferred", type(leader).__name__, "follower_graph", "Functional"]
    for name, outputs in expected.items():
        loaded = np.load(tmp_path / f"{name}_loaded.npz")
        assert sorted(loaded) == sorted(outputs)
        for key, value in outputs.items():
            np.testing.assert_allclose(loaded[key], value, rtol=1e-5, atol=1e-6)


def test_frozen_leader_keeps_its_batch_norm_statistics_while_the_team_trains():
    x, y = blobs(seed=1)
    keras.utils.set_random_seed(0)
    leader = keras_team.transfer(keras_team.zoo.residual_cnn((8, 8, 1), 5), keep="pool1",
                                 head=keras_team.heads.dense(5))
    statistics = [v for v in leader.non_trainable_weights if "moving" in v.path]
    assert statistics
    before = [np.array(v) for v in statistics]
    team = Team(leader, [Follower(mlp())])
    team.compile(keras.optimizers.Adam(1e-2))
    team.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert all(np.array_equal(np.array(v), b) for v, b in zip(statistics, before))


# --- 10: a Keras model like any other --------------------------------------------------------------


def test_team_is_a_keras_model_with_member_outputs_history_and_callbacks(source):
    x, y = blobs(seed=1)
    leader = transferred(source=source)
    feat, lg = Follower(mlp(name="feat")), Follower(mlp(name="lg"), tap="logits")
    team = Team({"leader": leader}, [feat, lg])
    assert team.member_names == ["leader", "feat", "lg"]
    predicted = team.predict(x[:5], verbose=0)
    assert sorted(predicted) == sorted(team.member_names)
    logits = leader.predict(x[:5], verbose=0)
    features = leader.body.predict(x[:5], verbose=0)  # the cut
    np.testing.assert_allclose(predicted["leader"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predicted["feat"], feat.model.predict(features, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predicted["lg"], lg.model.predict(logits, verbose=0), rtol=1e-5, atol=1e-6)

    team.compile(keras.optimizers.Adam(1e-2))
    # No later epoch improves the monitored member's loss by 10: training stops after 2 of 6 epochs
    # (a monitor name missing from the logs would only warn and train all 6).
    stop = keras.callbacks.EarlyStopping(monitor="val_feat_loss", min_delta=10.0, patience=1, mode="min")
    history = team.fit(x, y, validation_split=0.25, epochs=6, batch_size=16, verbose=0, callbacks=[stop])
    assert len(history.epoch) == 2
    for name in team.member_names:
        assert {f"{name}_loss", f"{name}_accuracy", f"val_{name}_loss"} <= set(history.history)
