"""keras_team.tuning: the hypermodel over cuts, the feature cache, tuners, resume and errors."""

import csv
import gc
import tempfile
import warnings

import keras
import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf

import keras_team
from keras_team.errors import KerasTeamError
from keras_team.freezing import is_trained, units
from keras_team.tuning import FeatureCache, TransferHyperModel, cap_per_class, make_tuner, trial_table, write_results
from keras_team.tuning import hypermodel as hypermodel_module
from keras_team.tuning.hypermodel import epoch_split, searchable_cuts
from tests.helpers import tensorflow_messages


@pytest.fixture(scope="module")
def digits():
    """Tiny digits: source 0-4 (all), target 5-9 with 5 shots and 6 validation images per class."""
    source, target = keras_team.data.digits_tasks(shots=5, seed=0)
    x_val, y_val = cap_per_class(*target.splits["validation"], 6)
    return source, target.splits["train"], (x_val, y_val)


def _leader(architecture, source):
    keras.utils.set_random_seed(0)
    leader = architecture((8, 8, 1), 5)
    leader.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    leader.fit(*source.splits["train"], epochs=1, batch_size=64, verbose=0)
    return leader


@pytest.fixture(scope="module")
def seed_leader(digits):
    return _leader(keras_team.zoo.seed_cnn, digits[0])


@pytest.fixture(scope="module")
def residual_leader(digits):
    return _leader(keras_team.zoo.residual_cnn, digits[0])


class EpochLog(keras.callbacks.Callback):
    """Records (epoch, trainable weights of the model it sees) across KerasTuner's deep copies."""

    seen: list = []

    def on_epoch_end(self, epoch, logs=None):
        EpochLog.seen.append((epoch, len(self.model.trainable_weights), self.model.name))


class OneSessionOnly(keras.callbacks.Callback):
    """Refuses a second training session, as TensorBoard's hparams callback does; counts what it saw."""

    def __init__(self):
        super().__init__()
        self.sessions, self.ended, self.epochs = 0, 0, []

    def on_train_begin(self, logs=None):
        if self.sessions:
            raise RuntimeError("this callback cannot be reused across training sessions")
        self.sessions += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_train_end(self, logs=None):
        self.ended += 1


def _values(hypermodel, **values):
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update(values)
    return hp


# --- the search space -------------------------------------------------------


def test_cut_choice_is_one_name_per_distinct_place_without_the_output(seed_leader, residual_leader):
    # conv1 and pool1 keep the same weighted layers: one place, named by its output (pool1); no fc3 (the output).
    assert [c.name for c in searchable_cuts(seed_leader)] == ["pool1", "flatten", "fc1", "fc2"]
    residual = [c.name for c in searchable_cuts(residual_leader)]
    assert residual == ["stem_relu", "pool1", "avg_pool"]  # never inside a block, never block1_add next to pool1
    hp = kt.HyperParameters()
    TransferHyperModel(residual_leader, 5, cuts=["pool1", "block2_out"]).declare_hyperparameters(hp)
    by_name = {h.name: h for h in hp.space}
    assert by_name["cut"].values == ["pool1", "block2_out"]  # named cuts: any cut point may be asked for


@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, include_top=True, classes=5)


def test_a_real_backbone_offers_one_cut_per_block_named_by_its_output(mobilenet):
    places = searchable_cuts(mobilenet)
    depths = [c.depth for c in places]
    assert depths == sorted(set(depths))  # one name per place: no two keep the same layers
    names = [c.name for c in places]
    assert len(names) < len(keras_team.cut_points(mobilenet)) / 2
    assert "expanded_conv_2_add" in names and "expanded_conv_1_project_bn" in names  # block outputs
    for hidden in ("conv", "conv_bn", "expanded_conv_depthwise_pad", "expanded_conv_2_depthwise"):
        assert hidden not in names  # a conv before its BN/activation, a padding of the next block


def test_plain_hyperband_constructor_builds_at_most_one_model(mobilenet, tmp_path, monkeypatch):
    """KerasTuner builds until every conditional scope was active: nothing in the space depends on the cut."""
    builds = []
    real_transfer = hypermodel_module.transfer
    monkeypatch.setattr(hypermodel_module, "transfer", lambda *a, **k: builds.append(1) or real_transfer(*a, **k))
    hypermodel = TransferHyperModel(mobilenet, 5)
    tuner = kt.Hyperband(hypermodel, objective="val_accuracy", max_epochs=3, directory=tmp_path, project_name="p")
    assert len(builds) <= 1
    space = tuner.oracle.get_space()
    assert [h.name for h in space.space] == [
        "cut", "head_layers", "head_units", "dropout", "learning_rate", "unfreeze", "fine_tune_learning_rate"]
    assert {h.name: h for h in space.space}["cut"].values == [c.name for c in searchable_cuts(mobilenet)]


def test_unfreeze_is_one_hyperparameter_capped_at_what_the_cut_keeps(seed_leader):
    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["conv1", "fc1"], max_unfreeze=2)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    unfreeze = [h for h in hp.space if h.name.startswith("unfreeze")]
    assert len(unfreeze) == 1 and (unfreeze[0].min_value, unfreeze[0].max_value) == (0, 2)
    assert not unfreeze[0].conditions  # the same meaning whatever the cut
    assert hypermodel.chosen({"cut": "fc1", "head_layers": 0, "unfreeze": 2})["unfreeze"] == 2
    assert hypermodel.chosen({"cut": "conv1", "head_layers": 0, "unfreeze": 2})["unfreeze"] == 1  # conv1 keeps one
    none = hypermodel.chosen({"cut": "fc1", "head_layers": 0, "unfreeze": 0, "fine_tune_learning_rate": 1e-4})
    assert none["fine_tune_learning_rate"] is None and none["head_units"] is None  # not part of this recipe


def test_build_is_seeded_without_resetting_the_global_random_state(seed_leader):
    """KerasTuner builds more than once per trial: each build starts alike, and the user's seed stays theirs."""
    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["fc1"], head_layers=[1], head_units=[8], dropout=[0.25])
    hp = _values(hypermodel)
    keras.utils.set_random_seed(7)
    expected = np.random.random()
    keras.utils.set_random_seed(7)
    first = hypermodel.build(hp)
    assert np.random.random() == expected  # the global state goes on from the user's seed 7
    np.random.random(), keras.random.normal((2,))  # whatever else draws in between
    second = hypermodel.build(hp)
    for a, b in zip(first.head.get_weights(), second.head.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_epoch_budget_is_shared_by_both_phases():
    assert epoch_split(0, 10, unfreeze_top=2, fine_tune_fraction=0.5) == 5
    assert epoch_split(0, 10, unfreeze_top=0, fine_tune_fraction=0.5) == 10  # nothing to fine-tune
    assert epoch_split(0, 1, unfreeze_top=2, fine_tune_fraction=0.5) == 1  # the head phase keeps one epoch
    assert epoch_split(4, 10, unfreeze_top=1, fine_tune_fraction=0.25) == 8  # Hyperband's later round


# --- one trial ----------------------------------------------------------------


def test_trial_trains_head_on_cached_features_then_fine_tunes_only_the_top_k(seed_leader, digits):
    _, (x, y), validation = digits
    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["fc1"], max_unfreeze=2, head_layers=[0],
                                    dropout=[0.0], learning_rate=[1e-2], fine_tune_learning_rate=[1e-3])
    hp = _values(hypermodel, cut="fc1", unfreeze=1)
    model = hypermodel.build(hp)
    EpochLog.seen = []
    once = OneSessionOnly()
    history = hypermodel.fit(hp, model, x, y, validation_data=validation, epochs=4, callbacks=[EpochLog(), once],
                             verbose=0)
    # Two epochs on the cached features (only the head trains; callbacks still see the full model), two fine-tuning.
    assert [(epoch, trainable) for epoch, trainable, _ in EpochLog.seen] == [(0, 2), (1, 2), (2, 4), (3, 4)]
    # Both phases are one training session to the callbacks: a callback that cannot be reused works.
    assert (once.sessions, once.ended, once.epochs) == (1, 1, [0, 1, 2, 3])
    assert {name for *_, name in EpochLog.seen} == {model.name}
    assert len(history.history["val_accuracy"]) == 4
    leader_weights = {layer.name: layer.get_weights() for layer in seed_leader.layers}
    body = model.body
    for name in ("conv1", "conv2"):
        assert all(np.array_equal(a, b) for a, b in zip(body.get_layer(name).get_weights(), leader_weights[name]))
    assert not np.array_equal(body.get_layer("fc1").get_weights()[0], leader_weights["fc1"][0])
    assert hypermodel.last_cache == "miss"
    # The fine-tuned model is the one that reports the last epoch's validation accuracy.
    assert model.evaluate(*validation, verbose=0)[1] == pytest.approx(history.history["val_accuracy"][-1], abs=1e-6)


def test_a_built_model_warns_that_its_own_fit_skips_the_fine_tuning(seed_leader, digits):
    _, (x, y), _ = digits
    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["fc1"], max_unfreeze=2, head_layers=[0], run_eagerly=True)
    fine_tuned = hypermodel.build(_values(hypermodel, cut="fc1", unfreeze=2))
    with pytest.warns(UserWarning, match="fine-tunes the top 2 kept layers .* hypermodel.fit\\(hp, model"):
        fine_tuned.fit(x[:4], y[:4], epochs=1, verbose=0)
    head_only = hypermodel.build(_values(hypermodel, cut="fc1", unfreeze=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own fit is its whole recipe: nothing to say
        head_only.fit(x[:4], y[:4], epochs=1, verbose=0)


def test_head_phase_on_cached_features_reports_what_the_full_model_scores(residual_leader, digits):
    _, (x, y), validation = digits
    hypermodel = TransferHyperModel(residual_leader, 5, cuts=["pool1"], max_unfreeze=0, head_layers=[1],
                                    head_units=[16], dropout=[0.0], learning_rate=[1e-2],
                                    cache=FeatureCache(dtype="float32"))
    hp = _values(hypermodel, cut="pool1")
    model = hypermodel.build(hp)
    history = hypermodel.fit(hp, model, x, y, validation_data=validation, epochs=2, verbose=0)
    loss, accuracy = model.evaluate(*validation, verbose=0)
    assert accuracy == pytest.approx(history.history["val_accuracy"][-1], abs=1e-6)
    assert loss == pytest.approx(history.history["val_loss"][-1], rel=1e-4)


@pytest.mark.parametrize("budget_examples, batches", [(100, 1), (4, 3)])
def test_validation_features_go_in_one_batch_when_they_fit_and_in_order_when_not(budget_examples, batches,
                                                                                monkeypatch):
    features = np.arange(10 * 6, dtype="float16").reshape(10, 2, 3)
    labels = np.arange(10)
    monkeypatch.setattr(hypermodel_module, "VALIDATION_BATCH_BYTES", budget_examples * 6 * 4)  # float32 features
    dataset = hypermodel_module._validation_batches((features, labels), 2)
    parts = list(dataset)
    assert len(parts) == batches
    np.testing.assert_array_equal(np.concatenate([p[0].numpy() for p in parts]), features.astype("float32"))
    np.testing.assert_array_equal(np.concatenate([p[1].numpy() for p in parts]), labels)


@pytest.mark.large
def test_a_trials_head_does_not_depend_on_the_trials_before_it(residual_leader, digits):
    """Trials share one compiled head on the cached features: each starts from its own head and a new optimizer."""
    _, (x, y), validation = digits

    def trained(*rates):
        hypermodel = TransferHyperModel(residual_leader, 5, cuts=["pool1"], max_unfreeze=0, head_layers=[1],
                                        head_units=[8], dropout=[0.25], learning_rate=[1e-2, 1e-1],
                                        cache=FeatureCache(dtype="float32"))
        for rate in rates:
            hp = _values(hypermodel, cut="pool1", learning_rate=rate)
            model = hypermodel.build(hp)
            history = hypermodel.fit(hp, model, x, y, validation_data=validation, epochs=2, verbose=0)
        return model, history, len(hypermodel._trainers)

    after_another, history, compiled = trained(1e-1, 1e-2)
    alone, alone_history, _ = trained(1e-2)
    assert compiled == 1  # one head structure and feature shape: compiled (and traced) once
    for a, b in zip(after_another.head.get_weights(), alone.head.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert history.history["val_accuracy"] == pytest.approx(alone_history.history["val_accuracy"])


@pytest.mark.large  # whole trials / a whole search: seconds each
def test_fine_tuning_on_the_boundary_cache_gives_the_full_forwards_trial(residual_leader, digits):
    """A fine-tune trial trains the unfrozen block and the head on the frozen part's output below them, computed once:
    the same weights and validation figures as the trial run through the full model (same seed and batches)."""
    _, (x, y), validation = digits

    def trial(hypermodel):
        hp = _values(hypermodel, cut="block2_out", unfreeze=2)
        model = hypermodel.build(hp)
        history = hypermodel.fit(hp, model, x, y, validation_data=validation, epochs=3, batch_size=8, shuffle=False,
                                 verbose=0)
        return model, history.history

    def hypermodel(cache):
        return TransferHyperModel(residual_leader, 5, cuts=["block2_out"], max_unfreeze=2, head_layers=[1],
                                  head_units=[16], dropout=[0.0], learning_rate=[1e-2], fine_tune_learning_rate=[1e-2],
                                  cache=cache)

    cached = hypermodel(FeatureCache(dtype="float32"))
    model, history = trial(cached)
    full, full_history = trial(hypermodel(False))
    assert (cached.boundaries.hits, cached.boundaries.misses) == (0, 2)  # training and validation, computed once
    top = model.body.get_layer("block2_conv2")  # fine-tuned: it moved, the same way in both trials
    assert not np.allclose(top.get_weights()[0], residual_leader.get_layer("block2_conv2").get_weights()[0])
    # Adam moves a weight of near-zero gradient by up to its rate (1e-2) a step, whatever the gradient's size: the
    # two summation orders left one kernel element 1.3e-5 apart on one CPU; a wrong batch or boundary moves many by ~1e-2.
    for a, b in zip(model.get_weights(), full.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for key in ("val_loss", "val_accuracy", "loss"):
        np.testing.assert_allclose(history[key], full_history[key], rtol=1e-4, atol=1e-5)
    again, _ = trial(cached)  # the next trial with this cut and depth reads the boundary back
    assert (cached.boundaries.hits, cached.boundaries.misses) == (2, 2)
    assert len(cached._trainers) == 2  # the head, then the part above the boundary: each compiled once
    for a, b in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_cache_switches_off_for_the_real_reason_and_says_it(seed_leader, digits, capsys):
    _, (x, y), validation = digits
    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["pool2"], max_unfreeze=0, run_eagerly=True)
    hp = _values(hypermodel, cut="pool2")
    augmented = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).map(
        lambda images, labels: (tf.image.flip_left_right(images), labels))
    hypermodel.fit(hp, hypermodel.build(hp), augmented, validation_data=validation, epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert "feature cache: OFF" in out and "training data is a _MapDataset" in out
    hypermodel.fit(hp, hypermodel.build(hp), x, y, validation_split=0.2, epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert "feature cache: OFF" in out and "validation_split" in out and "Dataset" not in out
    assert hypermodel.last_cache == "off" and hypermodel.cache.hits + hypermodel.cache.misses == 0


# --- the feature cache -------------------------------------------------------------


def test_feature_cache_hits_misses_and_invalidation(seed_leader, digits, tmp_path):
    _, (x, _), (x_val, _) = digits
    cache = FeatureCache(tmp_path)
    body = keras_team.body(seed_leader, "pool2")
    first = cache.features(body, x)
    np.testing.assert_allclose(first, body.predict(x, verbose=0), rtol=1e-3, atol=1e-3)  # float16 store
    assert first.dtype == np.float16
    cache.features(body, x)
    assert (cache.hits, cache.misses) == (1, 1)
    cache.features(keras_team.body(seed_leader, "pool2"), x)  # another copy of the same weights: a hit
    assert (cache.hits, cache.misses) == (2, 1)
    cache.features(body, x_val)  # other data
    assert (cache.hits, cache.misses) == (2, 2)
    changed = keras_team.body(seed_leader, "pool2")
    changed.get_layer("conv1").kernel.assign(changed.get_layer("conv1").kernel * 2.0)  # a retrained leader
    refreshed = cache.features(changed, x)
    assert (cache.hits, cache.misses) == (2, 3)
    np.testing.assert_allclose(refreshed, changed.predict(x, verbose=0), rtol=1e-3, atol=1e-3)
    cache.features(keras_team.body(seed_leader, "fc1"), x)  # another cut
    assert cache.misses == 4


def test_caching_the_features_of_every_cut_traces_no_graph_per_body(seed_leader, digits):
    """A search caches features at each cut and boundary it meets: TensorFlow must not warn of retracing."""
    _, (x, _), (x_val, _) = digits
    cache, cached = FeatureCache(dtype="float32"), []
    with tensorflow_messages() as messages:
        for cut in keras_team.cut_points(seed_leader):
            for data in (x, x_val):
                body = keras_team.body(seed_leader, cut.name)
                cached.append((body, data, cache.features(body, data)))
    assert not [m for m in messages if "retracing" in m], messages
    assert cache.misses == len(cached) >= 8
    for body, data, features in cached:
        np.testing.assert_allclose(features, body.predict(data, verbose=0), rtol=1e-5, atol=1e-5)


def test_an_in_memory_cache_keeps_at_most_max_bytes_dropping_the_least_recently_used(seed_leader):
    body = keras_team.body(seed_leader, "pool2")
    x = [np.full((4, 8, 8, 1), value, "float32") for value in range(3)]
    size = FeatureCache(dtype="float32").features(body, x[0]).nbytes
    cache = FeatureCache(dtype="float32", max_bytes=2 * size)
    cache.features(body, x[0]), cache.features(body, x[1])
    cache.features(body, x[0])  # used again: x[1] is now the least recent
    cache.features(body, x[2])  # a third does not fit: x[1]'s are dropped
    assert (cache.hits, cache.misses) == (1, 3)
    cache.features(body, x[0]), cache.features(body, x[2])
    assert (cache.hits, cache.misses) == (3, 3)
    recomputed = cache.features(body, x[1])
    assert cache.misses == 4
    np.testing.assert_allclose(recomputed, body.predict(x[1], verbose=0), rtol=1e-6, atol=1e-6)
    everything = FeatureCache(dtype="float32", max_bytes=size).features_of(body, x)  # one call: all of it returned
    assert [len(f) for f in everything] == [4, 4, 4]


def test_feature_cache_shows_progress_only_when_asked_and_only_while_computing(seed_leader, capsys):
    cache, body, x = FeatureCache(), keras_team.body(seed_leader, "pool2"), np.zeros((300, 8, 8, 1), "float32")
    cache.features_of(body, [x[:10]])
    assert capsys.readouterr().out == ""
    cache.features_of(body, [x], verbose=1)
    out = capsys.readouterr().out
    assert "computing the features of 'pool2'" in out and "300/300" in out
    cache.features_of(body, [x], verbose=1)  # a hit: nothing to compute
    assert capsys.readouterr().out == ""


# --- tuners -----------------------------------------------------------------------


@pytest.mark.parametrize("kind, oracle", [("random", kt.oracles.RandomSearchOracle),
                                          ("bayesian", kt.oracles.BayesianOptimizationOracle),
                                          ("hyperband", kt.oracles.HyperbandOracle), ("grid", kt.oracles.GridSearchOracle)])
def test_each_tuner_is_keras_tuners_own_with_the_budget_asked_for(kind, oracle, seed_leader, tmp_path):
    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["pool2", "fc1"])
    tuner = make_tuner(hypermodel, tuner=kind, max_trials=3, directory=tmp_path, progress=False)
    assert isinstance(tuner.oracle, oracle) and tuner.oracle.max_trials == 3
    assert tuner.oracle.objective.name == "val_accuracy" and tuner.oracle.objective.direction == "max"
    trial = tuner.oracle.create_trial("tuner0")
    assert trial.hyperparameters.get("cut") in ("pool2", "fc1")


@pytest.mark.large
@pytest.mark.parametrize("kind", ["hyperband"])
def test_each_tuner_searches_and_keeps_full_models_that_take_raw_pixels(kind, residual_leader, digits, tmp_path):
    """One tuner searches end to end (Hyperband: its own epoch budgets); the others share its code path."""
    _, (x, y), validation = digits
    leader, cuts = residual_leader, ["pool1", "block2_out"]
    hypermodel = TransferHyperModel(leader, 5, cuts=cuts, max_unfreeze=1, head_layers=[0], dropout=[0.0],
                                    learning_rate=[1e-2], fine_tune_learning_rate=[1e-4], run_eagerly=True)
    tuner = make_tuner(hypermodel, tuner=kind, max_trials=3, max_epochs=3, directory=tmp_path, seed=1)
    EpochLog.seen = []
    tuner.search(x, y, validation_data=validation, epochs=2, callbacks=[EpochLog()], verbose=0)
    rows = trial_table(tuner)
    assert len(rows) == 3 and all(row["status"] == "COMPLETED" for row in rows)
    assert all(row["unfreeze"] <= row["depth"] and row["cut"] in cuts for row in rows)
    assert {row["cache"] for row in rows} <= {"hit", "miss"} and rows[0]["cache"] == "miss"
    seen_cuts = [row["cut"] for row in rows]
    assert all(row["cache"] == "hit" for i, row in enumerate(rows) if row["cut"] in seen_cuts[:i])
    if kind == "hyperband":  # each trial runs exactly the epochs Hyperband grants it
        assert sum(row["epochs"] for row in rows) == len(EpochLog.seen)
    best = tuner.get_best_models(1)[0]
    raw = validation[0]
    assert raw.dtype == np.uint8 and best.predict(raw, verbose=0).shape == (len(raw), 5)
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert best.evaluate(*validation, verbose=0)[1] == pytest.approx(best_trial.score, abs=1e-6)


@pytest.mark.large
def test_rerun_resumes_the_search_without_repeating_trials(seed_leader, digits, tmp_path):
    _, (x, y), validation = digits

    def search(max_trials):
        hypermodel = TransferHyperModel(seed_leader, 5, cuts=["pool2", "fc1"], max_unfreeze=0,
                                        head_layers=[0, 1], head_units=[16], dropout=[0.0], run_eagerly=True)
        tuner = make_tuner(hypermodel, max_trials=max_trials, directory=tmp_path, seed=3)
        tuner.search(x, y, validation_data=validation, epochs=1, verbose=0)
        return tuner

    first = {row["trial"]: row for row in trial_table(search(2))}
    resumed = {row["trial"]: row for row in trial_table(search(3))}
    assert sorted(resumed) == ["0", "1", "2"]
    for trial_id, row in first.items():
        assert resumed[trial_id] == row  # same values, score and seconds: not run again


def _fixed(**values) -> kt.HyperParameters:
    """KerasTuner's way to fix part of a space: `hyperparameters=` of a tuner (the rest is searched)."""
    hp = kt.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


class Recipe(keras.callbacks.Callback):
    """Records what a trial (or a retrain) did: epochs with the trainable weights, the layers trained at the end."""

    runs: list = []

    def on_train_begin(self, logs=None):
        Recipe.runs.append({"epochs": [], "trained": None})

    def on_epoch_end(self, epoch, logs=None):
        Recipe.runs[-1]["epochs"].append((epoch, len(self.model.trainable_weights)))

    def on_train_end(self, logs=None):
        Recipe.runs[-1]["trained"] = [layer.name for layer in units(self.model) if is_trained(layer, self.model)]


@pytest.mark.large
def test_tensorboard_in_a_plain_tuner_keeps_every_fine_tuning_trial(seed_leader, digits, tmp_path, capsys):
    """KerasTuner adds TensorBoard's hparams callback, which refuses a second `fit`: the phases are one session."""
    _, (x, y), validation = digits
    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["pool2", "fc1"], max_unfreeze=1, head_layers=[0],
                                    run_eagerly=True)
    tuner = kt.RandomSearch(hypermodel, "val_accuracy", max_trials=2, hyperparameters=_fixed(unfreeze=1),
                            directory=tmp_path, project_name="p", seed=1)
    logs = tmp_path / "logs"
    tuner.search(x, y, validation_data=validation, epochs=2, verbose=0,
                 callbacks=[keras.callbacks.TensorBoard(str(logs))])
    trials = tuner.oracle.trials.values()
    assert [t.status for t in trials] == ["COMPLETED", "COMPLETED"], [t.message for t in trials]
    assert all(t.hyperparameters.get("unfreeze") == 1 for t in trials)
    for trial in trials:  # each trial wrote its hparams session and both phases' epochs
        run = logs / trial.trial_id / "execution0"
        assert list(run.glob("events.out.*")) and list((run / "validation").glob("events.out.*"))
    capsys.readouterr()
    tuner.results_summary()  # KerasTuner's own summary reads as the recipe
    summary = capsys.readouterr().out
    assert "cut: " in summary and "unfreeze: 1" in summary and "fine_tune_learning_rate: " in summary


@pytest.mark.large
def test_a_plain_tuners_cache_lives_in_its_project_and_serves_the_resumed_search(
        seed_leader, digits, tmp_path, monkeypatch):
    _, (x, y), validation = digits

    def search(max_trials):
        hypermodel = TransferHyperModel(seed_leader, 5, cuts=["fc1"], max_unfreeze=0, head_layers=[0],
                                        run_eagerly=True)
        tuner = kt.RandomSearch(hypermodel, "val_accuracy", max_trials=max_trials, directory=tmp_path,
                                project_name="p", seed=1)
        tuner.search(x, y, validation_data=validation, epochs=1, verbose=0)
        return hypermodel

    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: pytest.fail("a temporary directory left behind"))
    assert search(1).last_cache == "miss"
    assert len(list((tmp_path / "p" / "feature_cache").glob("*.npy"))) == 2  # training and validation features
    resumed = search(2)  # a new process would start from here: the files on disk are the cache
    assert resumed.last_cache == "hit" and (resumed.cache.hits, resumed.cache.misses) == (0, 0)


@pytest.mark.large
def test_a_failed_trial_is_reported_and_a_search_whose_every_trial_fails_fails(seed_leader, digits, tmp_path,
                                                                               capsys):
    _, (x, y), validation = digits

    class Broken(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("the disk of the logs is gone")

    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["fc1"], max_unfreeze=0, head_layers=[0], run_eagerly=True)
    tuner = make_tuner(hypermodel, max_trials=2, directory=tmp_path, progress=False)
    with pytest.raises(KerasTeamError, match="all 2 trials it ran failed .*RuntimeError: the disk of the logs is gone"):
        tuner.search(x, y, validation_data=validation, epochs=1, verbose=0, callbacks=[Broken()])
    assert gc.get_freeze_count() == 0  # make_tuner's search leaves Python's garbage collector as it found it
    out = capsys.readouterr().out
    assert "trial 0 FAILED: cut=fc1" in out and "trial 1 FAILED: cut=fc1" in out
    write_results(tuner, tmp_path / "results")
    with open(tmp_path / "results" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["status"], row["error"]) for row in rows] == [
        ("FAILED", "RuntimeError: the disk of the logs is gone")] * 2


@pytest.mark.large
def test_the_rebuilt_winner_follows_its_trials_recipe(seed_leader, digits, tmp_path):
    """The documented retrain: `hypermodel.build(best_hp)`, then `hypermodel.fit(best_hp, model, ...)`."""
    _, (x, y), validation = digits
    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["fc1"], max_unfreeze=2, head_layers=[0], run_eagerly=True)
    tuner = make_tuner(hypermodel, max_trials=1, directory=tmp_path, progress=False,
                       hyperparameters=_fixed(unfreeze=2))
    Recipe.runs = []
    tuner.search(x, y, validation_data=validation, epochs=4, verbose=0, callbacks=[Recipe()])
    best = tuner.get_best_hyperparameters()[0]
    model = hypermodel.build(best)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the documented retrain says nothing
        hypermodel.fit(best, model, x, y, validation_data=validation, epochs=4, verbose=0, callbacks=[Recipe()])
    trial, retrain = Recipe.runs
    assert retrain == trial
    assert trial["epochs"] == [(0, 2), (1, 2), (2, 6), (3, 6)]  # 2 head epochs, then 2 with conv2 and fc1 trained
    assert trial["trained"] == ["conv2", "fc1", "logits"]  # the top 2 kept layers and the head


@pytest.mark.large
def test_top_k_cuts_searches_only_the_cuts_the_advisor_ranks_best(seed_leader, digits):
    _, (x, y), (x_val, y_val) = digits
    seen = (np.concatenate([x, x_val]), np.concatenate([y, y_val]))  # what the search reads; never the test split
    hypermodel = TransferHyperModel(seed_leader, 5, top_k_cuts=2, rank_data=seen, max_unfreeze=3)
    ranking = hypermodel.cut_ranking
    assert sorted(s.cut.name for s in ranking) == sorted(c.name for c in searchable_cuts(seed_leader))
    kept = [c.name for c in hypermodel.cuts]
    assert len(kept) == 2 and min(s.score for s in ranking if s.cut.name in kept) >= max(
        s.score for s in ranking if s.cut.name not in kept)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    assert sorted(hp.space[0].values) == sorted(kept) and hp.space[0].name == "cut"


def test_cap_per_class_caps_validation_examples(digits):
    _, _, (x_val, y_val) = digits
    x, y = cap_per_class(x_val, y_val, 2, seed=1)
    assert np.bincount(y).tolist() == [2] * 5 and len(x) == 10
    assert all(any(np.array_equal(image, other) for other in x_val) for image in x)
    assert len(cap_per_class(x_val, y_val, 100)[1]) == len(y_val)


# --- errors ---------------------------------------------------------------------


def test_clear_errors_for_bad_searches(seed_leader, tmp_path):
    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["fc1"])
    with pytest.raises(KerasTeamError, match="max_trials=0 .* an int >= 1"):
        make_tuner(hypermodel, max_trials=0, directory=tmp_path)
    with pytest.raises(KerasTeamError, match="tuner='annealing' .* random, bayesian, hyperband, grid"):
        make_tuner(hypermodel, tuner="annealing", directory=tmp_path)
    with pytest.raises(KerasTeamError, match="objective='val_auc' .* val_accuracy"):
        make_tuner(hypermodel, objective="val_auc", directory=tmp_path)
    one_layer = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="out")])
    with pytest.raises(KerasTeamError, match="leader=.* a cut point that keeps a weighted layer"):
        TransferHyperModel(one_layer, 2)
    with pytest.raises(KerasTeamError, match="max_unfreeze=4 .* from 0 to 3"):
        TransferHyperModel(seed_leader, 5, cuts=["conv1", "fc1"], max_unfreeze=4)
    with pytest.raises(KerasTeamError, match="cuts=\\[\\] .* search space is empty"):
        TransferHyperModel(seed_leader, 5, cuts=[])
    with pytest.raises(KerasTeamError, match="cuts='fc3' .* conv1, pool1"):
        TransferHyperModel(seed_leader, 5, cuts=["fc3"])  # the output is no cut to transfer
    with pytest.raises(KerasTeamError, match="head_units=\\[\\] .* search space is empty"):
        TransferHyperModel(seed_leader, 5, head_units=[])
    with pytest.raises(KerasTeamError, match="top_k_cuts=0 .* an int >= 1"):
        TransferHyperModel(seed_leader, 5, top_k_cuts=0, rank_data=(np.zeros((2, 8, 8, 1)), np.arange(2)))
    with pytest.raises(KerasTeamError, match="rank_data='NoneType' .* training and validation examples"):
        TransferHyperModel(seed_leader, 5, top_k_cuts=2)


def test_seed_zero_gives_the_same_trials_every_time(seed_leader, tmp_path):
    """KerasTuner reads seed 0 as "unseeded"; make_tuner's seed 0 is a seed like any other."""

    def trials(seed, run):
        hypermodel = TransferHyperModel(seed_leader, 5, cuts=["conv1", "pool2", "fc1"], max_unfreeze=1,
                                        head_layers=[0, 1, 2], dropout=[0.0, 0.2, 0.5])
        tuner = make_tuner(hypermodel, seed=seed, max_trials=4, directory=tmp_path / run, progress=False)
        return [tuner.oracle.create_trial(f"tuner{i}").hyperparameters.values for i in range(4)]

    first = trials(0, "a")
    assert trials(0, "b") == first
    assert trials(1, "c") != first


class _CustomLoop(kt.HyperModel):
    """KerasTuner's custom-training-loop guide: `fit` calls only `on_epoch_end` of the tuner's callbacks."""

    def build(self, hp):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(hp.Choice("units", [2]))])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        return model

    def fit(self, hp, model, x, y, callbacks=(), **kwargs):
        for callback in callbacks:
            callback.set_model(model)
        for epoch in range(2):
            loss = float(model.train_on_batch(x, y))
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs={"my_loss": loss})
        return loss


@pytest.mark.large  # whole trials / a whole search: seconds each
def test_a_plain_keras_tuner_search_with_its_own_loop_is_untouched_by_the_package(tmp_path):
    import keras_team.tuning.search  # noqa: F401  (the package's searches, imported first)

    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    tuner = kt.RandomSearch(_CustomLoop(), objective=kt.Objective("my_loss", "min"), max_trials=1,
                            directory=tmp_path, project_name="own")
    tuner.search(x, y)
    best = tuner.get_best_models()[0]  # the checkpoint KerasTuner's SaveBestEpoch wrote at the best epoch
    assert best.predict(x, verbose=0).shape == (4, 2)


@pytest.mark.large
def test_get_best_models_loads_the_best_epochs_weights_without_keras_optimizer_warning(seed_leader, digits, tmp_path):
    """A fine-tuned trial's optimizer is built; the rebuilt best model's is not: Keras warned that it skipped
    loading the optimizer. The best model scores the trial's best validation loss (the best epoch's weights)."""
    _, (x, y), validation = digits
    hypermodel = TransferHyperModel(seed_leader, 5, cuts=["fc1"], max_unfreeze=1, head_layers=[0], run_eagerly=True)
    tuner = make_tuner(hypermodel, objective="val_loss", max_trials=1, directory=tmp_path, progress=False,
                       hyperparameters=_fixed(unfreeze=1))
    tuner.search(x, y, validation_data=validation, epochs=4, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        best = tuner.get_best_models()[0]
    assert not [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
    trial = tuner.oracle.get_best_trials(1)[0]
    assert best.evaluate(*validation, verbose=0, return_dict=True)["loss"] == pytest.approx(trial.score, rel=1e-5)
    assert int(best.optimizer.iterations) == 0  # compiled as `build` makes it, ready to retrain
