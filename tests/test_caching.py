"""A follower trained on cached taps learns what it learns inside the Team; the cache's storage."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_team
from keras_team import Distill, Follower, KerasTeamError, Team, caching
from keras_team.caching import cache_taps, cached_batches, fit_follower
from tests.helpers import blobs, same_weights, tensorflow_messages, weights_of


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def dataset(x, y, batch_size=16):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def leader_with_dropout_head():
    """A transferred leader whose head has Dropout: in training mode its logits are noisy."""
    source = keras_team.zoo.seed_cnn((8, 8, 1), 5, scale=1 / 10)
    return keras_team.transfer(source, keep=3, head=keras_team.heads.dense(5, hidden=(32,), dropout=0.5))


def two_leaders() -> dict:
    """Leaders `a` and `b`: the same architecture, different weights."""
    leaders = {}
    for name, seed in (("a", 1), ("b", 2)):
        keras.utils.set_random_seed(seed)
        leaders[name] = leader_with_dropout_head()
    return leaders


FOLLOWERS = {
    "features": lambda: Follower(keras_team.zoo.mlp(5, hidden=(16,)), tap="features"),
    "logits": lambda: Follower(keras_team.zoo.mlp(5, hidden=(16,)), tap="logits"),
    "probs": lambda: Follower(keras_team.zoo.mlp(5, hidden=(16,)), tap="probs", temperature=2.0),
    "distilled": lambda: Follower(keras_team.zoo.mlp(5, hidden=(16,)), tap="logits",
                                  distill=Distill(temperature=2.0, student_loss_weight=0.5)),
}


@pytest.mark.parametrize("kind", list(FOLLOWERS))
def test_first_training_step_is_the_same_in_the_team_and_on_the_cache(kind):
    x, y = blobs(n=64, seed=3)
    team = Team(leader_with_dropout_head(), [FOLLOWERS[kind]()])
    start = weights_of(team.follower_graphs["mlp"])

    # Inside the team: one full batch, one SGD step; only the follower's loss counts.
    team.compile(keras.optimizers.SGD(0.1), loss_weights={"leader": 0.0})
    in_team = team.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history["loss"][0]
    learned_in_team = weights_of(team.follower_graphs["mlp"])

    team.follower_graphs["mlp"].set_weights(start)
    history = fit_follower(team, "mlp", dataset(x, y), epochs=1, batch_size=len(x),
                           optimizer=keras.optimizers.SGD(0.1), verbose=0)
    on_cache = history.history["loss"][0]
    assert on_cache == pytest.approx(in_team, rel=1e-5)
    for cached, teamed, initial in zip(weights_of(team.follower_graphs["mlp"]), learned_in_team, start):
        np.testing.assert_allclose(cached, teamed, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(w, s) for w, s in zip(learned_in_team, start))  # the step did learn


def test_taps_are_the_leaders_inference_outputs_in_order():
    x, y = blobs(n=40, seed=4)
    leader = leader_with_dropout_head()
    team = Team(leader, [FOLLOWERS["distilled"]()])
    inputs, labels = cache_taps(team, "mlp", dataset(x, y, batch_size=7), verbose=0)
    assert sorted(inputs) == ["leader_logits"]
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(inputs["leader_logits"], leader.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_one_pass_for_several_followers_gives_each_the_taps_of_its_own_pass():
    """Followers reading the same leaders share one cache: each one's part is what caching it alone gives."""
    x, y = blobs(n=40, seed=4)
    team = Team(leader_with_dropout_head(), [Follower(keras_team.zoo.mlp(5), name=name, tap=tap)
                                             for name, tap in (("f", "features"), ("g", "logits"), ("h", "features"))])
    shared = cache_taps(team, ["f", "g", "h"], dataset(x, y, batch_size=7), verbose=0)
    assert sorted(shared.inputs) == ["leader_features", "leader_logits"]  # the union, each tap once
    for name in ("f", "g", "h"):
        alone = cache_taps(team, name, dataset(x, y, batch_size=7), verbose=0)
        mine = shared.select(caching.follower_keys(team, name))
        assert list(mine.inputs) == list(alone.inputs)
        for key in alone.inputs:
            np.testing.assert_array_equal(mine.inputs[key], alone.inputs[key])
        np.testing.assert_array_equal(mine.labels, alone.labels)


def test_a_shared_cache_holds_only_the_taps_its_followers_read_of_each_leader():
    x, y = blobs(n=12, seed=6)
    leaders = two_leaders()
    team = Team(leaders, [Follower(keras_team.zoo.mlp(5), name="f", tap="features", leaders=["a"]),
                          Follower(keras_team.zoo.mlp(5), name="g", tap="logits", leaders=["b"])])
    shared = cache_taps(team, ["f", "g"], dataset(x, y), verbose=0)
    assert sorted(shared.inputs) == ["a_features", "b_logits"]
    np.testing.assert_allclose(shared.inputs["b_logits"], leaders["b"].predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_follower_fitted_on_a_shared_cache_learns_what_it_learns_from_the_data():
    x, y = blobs(n=48, seed=5)
    team = Team(leader_with_dropout_head(), [FOLLOWERS["features"](), Follower(keras_team.zoo.mlp(5), name="g", tap="logits")])
    start = weights_of(team.follower_graphs["mlp"])
    fit_follower(team, "mlp", dataset(x, y), dataset(x, y), epochs=2, batch_size=8, seed=3, verbose=0)
    from_data = weights_of(team.follower_graphs["mlp"])
    team.follower_graphs["mlp"].set_weights(start)
    train, validation = (cache_taps(team, ["mlp", "g"], dataset(x, y), verbose=0) for _ in range(2))
    history = fit_follower(team, "mlp", train, validation, epochs=2, batch_size=8, seed=3, verbose=0)
    assert same_weights(weights_of(team.follower_graphs["mlp"]), from_data)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    with pytest.raises(KerasTeamError) as error:  # its passes are cached already: views has nothing to add
        fit_follower(team, "mlp", train, epochs=1, views=2, verbose=0)
    assert error.value.field == "views"
    with pytest.raises(KerasTeamError) as error:  # a cache of another follower's taps lacks this one's
        fit_follower(team, "mlp", cache_taps(team, "g", dataset(x, y), verbose=0), epochs=1, verbose=0)
    assert error.value.field == "cache" and "leader_features" in str(error.value)


def test_caching_many_splits_and_probe_features_traces_no_graph_per_call():
    """A run caches taps and probe features for every split, view and follower: TensorFlow must not warn of retracing."""
    from keras_team.probe import features_of

    with tensorflow_messages() as messages:
        for n in (5, 9, 13, 17, 21, 25, 29):  # a new follower and split size each time, as in a run
            x, y = blobs(n=n, seed=n)
            leader = leader_with_dropout_head()
            cache_taps(Team(leader, [FOLLOWERS["features"]()]), "mlp", dataset(x, y, batch_size=4), views=2, verbose=0)
            features = features_of(leader.body, x, batch_size=8)
        np.testing.assert_allclose(features, leader.body.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
        streamed = tf.data.Dataset.from_tensor_slices(x).batch(6)  # a streamed task's examples: batches
        np.testing.assert_allclose(features_of(leader.body, streamed), features, rtol=1e-5, atol=1e-6)
    assert not [m for m in messages if "retracing" in m], messages


def test_cache_on_disk_is_memory_mapped_and_equal_to_the_one_in_memory(tmp_path):
    x, y = blobs(n=40, seed=5)
    team = Team(leader_with_dropout_head(), [FOLLOWERS["features"]()])
    in_memory = cache_taps(team, "mlp", dataset(x, y), verbose=0)
    on_disk = cache_taps(team, "mlp", dataset(x, y), directory=tmp_path / "cache", verbose=0)
    features = on_disk.inputs["leader_features"]
    assert isinstance(features, np.memmap)
    assert (tmp_path / "cache" / "leader_features.bin").stat().st_size == features.size * 4
    np.testing.assert_array_equal(features, in_memory.inputs["leader_features"])
    np.testing.assert_array_equal(np.load(tmp_path / "cache" / "labels.npy"), y)


def test_large_caches_are_kept_as_float16(monkeypatch):
    x, y = blobs(n=40, seed=6)
    team = Team(leader_with_dropout_head(), [FOLLOWERS["features"]()])
    exact = cache_taps(team, "mlp", dataset(x, y), verbose=0).inputs["leader_features"]
    assert exact.dtype == np.float32
    monkeypatch.setattr(keras_team.caching, "FLOAT16_ABOVE_BYTES", exact.nbytes // 2)
    narrow = cache_taps(team, "mlp", dataset(x, y), verbose=0).inputs["leader_features"]
    assert narrow.dtype == np.float16
    np.testing.assert_allclose(narrow.astype(np.float32), exact, rtol=1e-3, atol=1e-4)
    assert cache_taps(team, "mlp", dataset(x, y), dtype="float32", verbose=0).inputs["leader_features"].dtype == np.float32


def test_float16_that_overflows_is_a_clear_error():
    x, y = blobs(n=8, seed=6)
    loud = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(4, kernel_initializer=keras.initializers.Constant(1e3)),
                             keras.layers.Dense(5)])
    team = Team(loud, [FOLLOWERS["features"]()])
    with pytest.raises(KerasTeamError, match="float16"):
        cache_taps(team, "mlp", dataset(x, y), dtype="float16", verbose=0)


def test_batches_cover_every_example_once_per_epoch_reshuffled_and_seeded():
    labels = np.arange(10)
    cache = keras_team.caching.TapCache({"leader_features": labels[:, None].astype("float32")}, labels)

    def epochs(seed):
        keras.utils.set_random_seed(0)
        batches = cached_batches(cache, outputs=2, batch_size=4, seed=seed)
        seen = []
        for _ in range(2):
            epoch = [(x["leader_features"].numpy(), y1.numpy(), y2.numpy()) for x, (y1, y2) in batches]
            for x, y1, y2 in epoch:
                np.testing.assert_array_equal(x[:, 0], y1)  # inputs and labels stay paired
                np.testing.assert_array_equal(y1, y2)  # one label copy per output
            seen.append([list(y) for _, y, _ in epoch])
        return seen

    first, second = epochs(seed=1)
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(10))
    assert first != second  # reshuffled between epochs
    assert epochs(seed=1) == [first, second]  # and the same again for the same seed


def test_views_cache_several_augmented_passes():
    x, y = blobs(n=12, seed=7)
    noise = tf.random.Generator.from_seed(0)  # its state advances: every pass draws new noise
    noisy = dataset(x, y, batch_size=4).map(
        lambda images, labels: (tf.cast(images, "float32") + noise.uniform(tf.shape(images), 0, 50), labels))
    team = Team(leader_with_dropout_head(), [FOLLOWERS["features"]()])
    inputs, labels = cache_taps(team, "mlp", noisy, views=3, verbose=0)
    features = inputs["leader_features"]
    assert features.shape[0] == 36
    np.testing.assert_array_equal(labels, np.concatenate([y] * 3))
    assert not np.allclose(features[:12], features[12:24])  # each pass is a new augmented view

    history = fit_follower(team, "mlp", noisy, epochs=1, batch_size=6, views=3, verbose=0)
    assert len(history.history["loss"]) == 1


@pytest.mark.parametrize("call, field", [
    (lambda team, data: cache_taps(team, "mlp", data.take(0), verbose=0), "dataset"),
    (lambda team, data: cache_taps(team, "mlp", data, views=0, verbose=0), "views"),
    (lambda team, data: cache_taps(team, "mlp", data, dtype="int8", verbose=0), "dtype"),
    (lambda team, data: cache_taps(team, "nope", data, verbose=0), "follower"),
    (lambda team, data: cache_taps(team, ["mlp", "nope"], data, verbose=0), "follower"),
    (lambda team, data: cache_taps(team, [], data, verbose=0), "name"),
])
def test_cache_errors_name_the_field(call, field):
    x, y = blobs(n=8)
    team = Team(leader_with_dropout_head(), [FOLLOWERS["features"]()])
    with pytest.raises(KerasTeamError) as error:
        call(team, dataset(x, y))
    assert error.value.field == field


def test_each_output_of_a_follower_reports_its_own_accuracy():
    x, y = blobs(n=48, seed=8)
    leaders = two_leaders()
    team = Team(leaders, [Follower(keras_team.zoo.mlp(5, hidden=(16,)), tap="logits", combine="each")])
    history = fit_follower(team, "mlp", dataset(x, y), dataset(x, y), epochs=1, verbose=0).history
    predicted = team.predict(x, verbose=0)
    accuracies = [np.mean(predicted[out].argmax(-1) == y) for out in ("mlp_a", "mlp_b")]
    assert accuracies[0] != accuracies[1]  # the two outputs differ, so a pooled figure would show
    reported = [history[key][-1] for key in history if key.startswith("val_") and "accuracy" in key]
    assert sorted(reported) == pytest.approx(sorted(accuracies))


@pytest.mark.large
@pytest.mark.parametrize("unfrozen_blocks", [0, 1])
def test_fit_transfer_on_cached_features_gives_the_full_forward_weights(unfrozen_blocks):
    """The frozen part computed once gives the weights `model.fit` on the whole model gives (same seeds)."""
    task = keras_team.data.digits(classes=[0, 1, 2], shots=10, batch_size=8)
    leader = keras_team.zoo.residual_cnn((8, 8, 1), 3)

    def student():
        keras.utils.set_random_seed(1)
        model = keras_team.transfer(leader, keep="block2_out", head=keras_team.heads.dense(3, hidden=(16,), dropout=0.5))
        return keras_team.unfreeze(model, top=unfrozen_blocks, unit="blocks")

    full, cached = student(), student()
    keras.utils.set_random_seed(2)
    full.compile(keras.optimizers.Adam(0.01), keras_team.heads.LOSS, metrics=["accuracy"])
    reference = full.fit(task.dataset("train", training=True).repeat(), steps_per_epoch=4, epochs=3,
                         validation_data=task.dataset("validation"), verbose=0)
    keras.utils.set_random_seed(2)
    history = caching.fit_transfer(cached, task.dataset("train"), task.dataset("validation"), epochs=3,
                                   optimizer=keras.optimizers.Adam(0.01), batch_size=8, seed=task.seed, verbose=0)
    assert caching.split_frozen(cached).boundary == ("block2_out" if not unfrozen_blocks else "pool1")
    for a, b in zip(full.get_weights(), cached.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history.history["val_loss"], reference.history["val_loss"], rtol=1e-5)


@pytest.mark.large
def test_transfer_cached_under_the_fine_tuned_layers_lets_fine_tuning_reuse_its_cache(monkeypatch):
    """The head trained on a cache taken under the layers fine-tuning unfreezes learns the same weights, and
    the fine-tuning then reads that cache: the frozen part runs once for both stages."""
    task = keras_team.data.digits(classes=[0, 1, 2], shots=10, batch_size=8)
    leader = keras_team.zoo.residual_cnn((8, 8, 1), 3)
    keras.utils.set_random_seed(1)
    plain = keras_team.transfer(leader, keep="block2_out", head=keras_team.heads.dense(3, hidden=(16,)))
    shared = keras_team.transfer(leader, keep="block2_out", head=keras_team.heads.dense(3, hidden=(16,)))
    shared.set_weights(plain.get_weights())
    passes = []
    cache_features = caching.cache_features
    monkeypatch.setattr(caching, "cache_features", lambda bottom, *a, **k: passes.append(bottom.name) or
                        cache_features(bottom, *a, **k))
    options = dict(epochs=3, batch_size=8, seed=task.seed, verbose=0)
    data = (task.dataset("train"), task.dataset("validation"))

    reuse = {}
    caching.fit_transfer(plain, *data, optimizer=keras.optimizers.Adam(0.01), **options)
    below = keras_team.to_unfreeze(shared, top=1)
    caching.fit_transfer(shared, *data, optimizer=keras.optimizers.Adam(0.01), below=below, reuse=reuse, **options)
    assert [layer.trainable for layer in below] == [False]  # frozen while the head trains
    for a, b in zip(plain.get_weights(), shared.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    head_boundary = caching.split_frozen(plain).boundary
    fine_tune_boundary = caching.split_frozen(keras_team.unfreeze(shared, top=1)).boundary
    assert {boundary for boundary, _, _ in reuse} == {fine_tune_boundary} != {head_boundary}
    passes.clear()
    keras_team.unfreeze(plain, top=1)
    caching.fit_transfer(plain, *data, optimizer=keras.optimizers.Adam(0.001), **options)
    assert len(passes) == 2  # train and validation
    passes.clear()
    caching.fit_transfer(shared, *data, optimizer=keras.optimizers.Adam(0.001), reuse=reuse, **options)
    assert passes == []
    for a, b in zip(plain.get_weights(), shared.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.large
def test_a_follower_on_two_workers_is_fitted_by_the_chief_as_one_process_fits_it_and_resumes(tmp_path):
    from tests.chief_fit_worker import follower_fits
    from tests.helpers import two_workers

    chief, other = two_workers("follower", CHECKPOINT_DIR=str(tmp_path / "cluster"))
    assert chief == other  # the non-chief holds the chief's weights and history, bit for bit
    assert (chief["first"]["epoch"], chief["resumed"]["epoch"]) == ([0, 1], [2, 3])  # resumed from the chief's checkpoint
    alone = follower_fits(str(tmp_path / "alone"))  # one process: the same fits, dropout masks included
    for part in ("first", "resumed"):
        assert alone[part]["epoch"] == chief[part]["epoch"]
        assert np.allclose(alone[part]["loss"], chief[part]["loss"], rtol=1e-5)
        assert all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(alone[part]["weights"], chief[part]["weights"]))
