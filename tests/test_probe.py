"""Few-shot members: the linear probe (its L2 chosen on validation), `keep: auto`, and linear probe then fine-tune."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_team
from keras_team import caching, probe
from keras_team.app import cli, recipe
from keras_team.app import config as config_module
from keras_team.app.config import load_config
from keras_team.cuts import CutPoint
from keras_team.errors import KerasTeamError
from keras_team.transferability import CutScore
from tests.helpers import trained_leader, two_workers


def features_task(noise: float, seed: int = 0, n: int = 60, classes: int = 4, width: int = 30):
    """Features whose class shows in a few columns; a share `noise` of the labels (train and validation) is random."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    features = rng.normal(size=(n, width)) + 3.0 * np.eye(classes, width)[labels]
    flipped = rng.random(n) < noise
    labels = np.where(flipped, rng.integers(0, classes, n), labels)
    half = n // 2
    return (features[:half], labels[:half]), (features[half:], labels[half:])


@pytest.mark.large
def test_a_probe_on_noisy_labels_chooses_a_stronger_l2_than_on_clean_ones():
    grid = (1e-4, 1e-2, 1.0)
    chosen = {}
    for noise in (0.0, 0.6):
        keras.utils.set_random_seed(0)
        head = keras_team.heads.dense(4)
        head.build((None, 30))
        fit = probe.fit_probe(head, *features_task(noise), l2=grid, epochs=20)
        assert fit.score == fit.scores[fit.l2] and fit.l2 in grid
        assert all(fit.score.loss <= s.loss for s in fit.scores.values())  # the best on validation
        assert head.get_layer("logits").kernel_regularizer.l2 == pytest.approx(fit.l2) if fit.l2 else True
        chosen[noise] = fit.l2
    assert chosen[0.6] > chosen[0.0], chosen


def test_each_strength_of_a_probe_scores_as_its_own_fit_from_one_traced_step():
    """Strengths share one traced step: each still starts from the same weights, optimizer state and batches."""
    grid = (1e-4, 1e-2, 1.0)
    train, validation = features_task(0.2)
    fits, traces = {}, {}
    for strengths in (grid, *((strength,) for strength in grid)):
        keras.utils.set_random_seed(0)  # the same initial weights for the grid's fit and each strength alone
        head = keras_team.heads.dense(4)
        head.build((None, 30))
        step, traces[strengths] = head.train_step, []
        head.train_step = lambda data, step=step, seen=traces[strengths]: seen.append(1) or step(data)  # per trace
        fits[strengths] = probe.fit_probe(head, train, validation, l2=strengths, epochs=8, patience=3, seed=0)
    assert len(traces[grid]) == len(traces[grid[:1]])  # the grid traced its step as often as one strength's fit
    for strength in grid:
        alone, in_grid = fits[(strength,)].score, fits[grid].scores[strength]
        assert alone.epoch == in_grid.epoch, strength
        assert alone.loss == pytest.approx(in_grid.loss, rel=1e-5), strength


def test_a_probe_grid_must_be_a_list_of_strengths_and_the_model_have_one_output():
    head = keras_team.heads.dense(2)
    head.build((None, 3))
    data = (np.zeros((4, 3)), np.array([0, 1, 0, 1]))
    with pytest.raises(KerasTeamError, match="l2="):
        probe.fit_probe(head, data, data, l2=())
    with pytest.raises(KerasTeamError, match="l2="):
        probe.fit_probe(head, data, data, l2=(-1.0,))
    inputs = keras.Input((3,))
    two = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)])
    with pytest.raises(KerasTeamError, match="one output"):
        probe.fit_probe(two, data, data)


def _standardized_mean(statistics, shots):
    (x, y), (xv, yv) = features_task(0.0, n=40)
    x, y = np.concatenate([x[y == c][:shots] for c in range(4)]), np.repeat(np.arange(4), shots)
    head = keras_team.heads.probe(4)
    head.build((None, 30))
    fit = probe.fit_probe(head, (x, y), (xv, yv), l2=(0.0,), epochs=1, statistics=statistics)
    return fit.statistics, np.asarray(head.get_layer("standardize").mean), x, xv


def test_at_one_shot_a_probe_standardizes_with_the_validation_inputs_too():
    # One example per class: the training spread is the classes' differences alone; the validation inputs join.
    source, mean, x, xv = _standardized_mean("auto", shots=1)
    assert source == "train+validation"
    np.testing.assert_allclose(mean, np.concatenate([x, xv]).mean(axis=0), rtol=1e-5, atol=1e-6)
    source, mean, x, _ = _standardized_mean("auto", shots=2)
    assert source == "train"
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5, atol=1e-6)
    source, mean, x, _ = _standardized_mean("train", shots=1)  # asked for: kept whatever the shots
    assert source == "train"
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(KerasTeamError, match="statistics.*auto, train, train\\+validation"):
        _standardized_mean("validation", shots=1)


def test_a_probe_follower_trains_on_its_examples_and_the_augmented_copies_given():
    keras.utils.set_random_seed(0)
    leader = keras_team.zoo.seed_cnn((8, 8, 1), 3)
    team = keras_team.Team(leader, [keras_team.Follower(keras_team.heads.probe(3), name="probe")])
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (9, 8, 8, 1)).astype("float32"), np.arange(9) % 3
    batches = lambda images: tf.data.Dataset.from_tensor_slices((images, y)).batch(4)
    flipped = batches(x).map(lambda images, labels: (images[:, :, ::-1], labels))  # a view: the mirror image
    probe.probe_follower(team, "probe", batches(x), batches(x), augmented=flipped, copies=2, l2=(0.0,), epochs=1)
    # The probe's training statistics are those of the leader's features of x, then twice of its mirror (numpy's)
    features = keras.Model(leader.inputs, leader.get_layer("fc2").output).predict(
        np.concatenate([x, x[:, :, ::-1], x[:, :, ::-1]]), verbose=0)
    standardize = team.follower_graphs["probe"].get_layer("head").get_layer("standardize")
    np.testing.assert_allclose(np.asarray(standardize.mean), features.mean(axis=0), rtol=1e-4, atol=1e-4)
    with pytest.raises(KerasTeamError, match="copies"):
        probe.probe_follower(team, "probe", batches(x), batches(x), copies=2)
    # One shot with copies is still one shot: the validation inputs join the statistics (the shots, copies, then x)
    shots = tf.data.Dataset.from_tensor_slices((x[:3], y[:3])).batch(4)
    fit = probe.probe_follower(team, "probe", shots, batches(x), augmented=shots.map(
        lambda images, labels: (images[:, :, ::-1], labels)), copies=2, l2=(0.0,), epochs=1)
    assert fit.statistics == "train+validation"
    features = keras.Model(leader.inputs, leader.get_layer("fc2").output).predict(
        np.concatenate([x[:3], x[:3, :, ::-1], x[:3, :, ::-1], x]), verbose=0)
    np.testing.assert_allclose(np.asarray(standardize.mean), features.mean(axis=0), rtol=1e-4, atol=1e-4)


def test_a_probe_follower_on_taps_cached_for_several_followers_fits_as_on_the_data():
    leader = keras_team.zoo.seed_cnn((8, 8, 1), 3)
    team = keras_team.Team(leader, [keras_team.Follower(keras_team.heads.probe(3), name=name) for name in ("a", "b")])
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (12, 8, 8, 1)).astype("float32"), np.arange(12) % 3
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    start = team.follower_graphs["a"].get_weights()

    def fitted(train, validation):
        keras.utils.set_random_seed(0)
        team.follower_graphs["a"].set_weights(start)
        fit = probe.probe_follower(team, "a", train, validation, l2=(0.0, 0.01), epochs=2)
        return fit.figures(), team.follower_graphs["a"].get_weights()

    shared = caching.cache_taps(team, ["a", "b"], batches, verbose=0)
    (on_data, data_weights), (on_cache, cache_weights) = fitted(batches, batches), fitted(shared, shared)
    assert on_data == on_cache
    for data_weight, cache_weight in zip(data_weights, cache_weights):
        np.testing.assert_array_equal(data_weight, cache_weight)


def test_a_pooled_probe_reads_each_channels_mean_and_spread_and_survives_save(tmp_path):
    keras.utils.set_random_seed(0)
    leader = keras_team.zoo.residual_cnn((8, 8, 1), 3)
    student = keras_team.transfer(leader, keep="pool1", head=keras_team.heads.probe(3))
    follower = keras_team.Follower(keras_team.heads.probe(3, pool="mean_std"), name="pooled")
    team = keras_team.Team({"leader": student}, [follower])
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (12, 8, 8, 1)).astype("float32"), np.arange(12) % 3
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    probe.probe_follower(team, "pooled", batches, batches, l2=(0.01,), epochs=2)
    maps = student.body.predict(x, verbose=0)  # (12, 4, 4, 16): the cut's feature maps
    reference = np.concatenate([maps.mean(axis=(1, 2)), maps.std(axis=(1, 2))], axis=1)  # numpy's, per channel
    standardize = team.follower_graphs["pooled"].get_layer("head").get_layer("standardize")
    np.testing.assert_allclose(np.asarray(standardize.mean), reference.mean(axis=0), rtol=1e-4, atol=1e-5)
    path = tmp_path / "team.keras"
    team.save(path)
    loaded = keras_team.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["pooled"], team.predict(x, verbose=0)["pooled"], atol=1e-5)
    with pytest.raises(KerasTeamError, match="pool"):
        keras_team.heads.probe(3, pool="max")


def test_the_configs_probe_poolings_are_the_heads():
    assert config_module.POOLS == keras_team.heads.POOLS


def _cut(name, width):
    return CutPoint(name, 1, (None, width), 0)


def test_keep_auto_takes_the_fewest_features_among_cuts_within_one_standard_error(monkeypatch):
    ranking = [CutScore(_cut("wide", 1024), 0.91, 0.1), CutScore(_cut("narrow", 256), 0.90, 0.1),
               CutScore(_cut("tiny", 16), 0.60, 0.1)]
    monkeypatch.setattr(recipe, "rank_cuts", lambda *args, **kwargs: ranking)
    monkeypatch.setattr(recipe, "cut_points", lambda *args, **kwargs: [])
    examples = (np.zeros((100, 2)), np.zeros(100, "int32"))
    target = keras_team.data.Task("t", {"train": examples, "validation": examples}, ("a",))  # one SE: 0.020
    assert recipe.rank_keep(None, target) == (ranking[1], ranking)
    ranking[1] = CutScore(_cut("narrow", 256), 0.85, 0.1)  # 3 SE below: noise no longer explains it
    assert recipe.rank_keep(None, target)[0] == ranking[0]


class Noise(keras.layers.Layer):
    """Features that ignore the input."""

    def call(self, inputs):
        return keras.random.normal(keras.ops.shape(inputs), seed=7)


@pytest.mark.large
def test_keep_auto_chooses_a_cut_whose_features_carry_signal_over_a_noise_cut():
    keras.utils.set_random_seed(0)
    leader = trained_leader()
    noisy = Noise(name="noise")(leader.get_layer("fc1").output)
    leader = keras.Model(leader.inputs, keras.layers.Dense(5, name="out")(keras.layers.Dense(8, name="fc3")(noisy)))
    target = keras_team.data.digits(classes=[5, 6, 7, 8, 9], shots=5)
    chosen, ranking = recipe.rank_keep(leader, target)
    noise = next(c.position for c in keras_team.cut_points(leader) if c.name == "noise")
    noisy = [s.score for s in ranking if s.cut.position >= noise]  # the blocks whose features are noise
    assert noisy and chosen.cut.position < noise
    assert chosen.score > max(noisy) + 0.3, ranking  # chance is 0.2


def test_probe_config_mistakes_are_one_line_errors_naming_the_field(capsys):
    cases = {
        "followers.0.combine": ["followers.0.kind=linear_probe", "followers.0.combine=each"],
        "followers.0.distill": ["followers.0.kind=linear_probe",
                                "followers.0.distill={temperature: 2.0, student_loss_weight: 0.5}"],
        "followers.0.l2": ["followers.0.l2=[]"],
        "transfer.head.l2": ["transfer.head.l2=[0.1, -1]"],
        "followers.0.kind": ["followers.0.kind=probe"],
        "followers.0.augment": ["followers.0.augment=[shift]"],  # the mlp's: only a linear_probe takes copies
        "followers.0.pool": ["followers.0.pool=mean"],  # likewise its pooling
        "followers.1.pool": ["followers.1.pool=max"],
        "followers.1.augment": ["followers.1.augment=[rotate]"],
    }
    for field, overrides in cases.items():
        with pytest.raises(KerasTeamError) as error:
            load_config(overrides=overrides)
        path = field.replace(".0.", "[0].").replace(".1.", "[1].")
        assert str(error.value).startswith(path), (field, str(error.value))
        assert cli.main(["check", *[a for o in overrides for a in ("--set", o)]]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and path in err[0], err


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    """A run from a given leader: keep auto, a linear-probe head fine-tuned at a negligible rate, a probe follower."""
    root = tmp_path_factory.mktemp("probe")
    keras.utils.set_random_seed(0)
    trained_leader().save(root / "leader.keras")
    settings = [
        f"leader.path={root / 'leader.keras'}", "transfer.keep=auto", "transfer.head.kind=linear_probe",
        "transfer.head.l2=[0.001, 0.1]", "transfer.epochs=5", "transfer.learning_rate=0.03",
        "transfer.unfreeze=1", "transfer.fine_tune_epochs=1", "transfer.fine_tune_learning_rate=1e-9",
        "followers=[{name: probe, kind: linear_probe, l2: [0.001, 0.1], epochs: 5, learning_rate: 0.03}]",
        "baseline.epochs=1", "data.target.shots=3",
    ]
    args = [a for s in settings for a in ("--set", s)]
    assert cli.main(["check", *args]) == 0
    assert cli.main(["run", "--quiet", "--output-dir", str(root / "run"), *args]) == 0
    return root / "run"


@pytest.mark.large
def test_keep_auto_is_said_by_check_and_recorded_in_the_report(probed_run, capsys):
    report = json.loads((probed_run / "report.json").read_text())
    transfer = report["stages"]["transfer"]
    ranked = dict(transfer["cut_ranking"])
    assert report["cut"]["name"] == transfer["cut"] and ranked[transfer["cut"]] == transfer["cut_score"]
    assert set(ranked) == {c.name for c in keras_team.cut_points(trained_leader(), view="blocks")}
    args = [f"--set=leader.path={probed_run.parent / 'leader.keras'}", "--set=transfer.keep=auto", "--set=data.target.shots=3"]
    capsys.readouterr()
    assert cli.main(["check", *args]) == 0
    cut_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cut"))
    assert transfer["cut"] in cut_line and f"rank_cuts score {transfer['cut_score']:.3f}" in cut_line


@pytest.mark.large
def test_the_probes_record_an_l2_chosen_from_their_grids(probed_run):
    stages = json.loads((probed_run / "state.json").read_text())["stages"]
    for figures in (stages["transfer"], stages["followers"]["probe"]):
        assert figures["l2"] in (0.001, 0.1)
        losses = dict(figures["l2_val_loss"])
        assert figures["val_loss"] == losses[figures["l2"]] == min(losses.values())
    team = keras_team.load_model(probed_run / "team.keras")
    logits = team.follower_graphs["probe"].get_layer("probe").get_layer("logits")
    assert logits.kernel_regularizer.l2 == pytest.approx(stages["followers"]["probe"]["l2"])  # saved as chosen


@pytest.mark.large
def test_fine_tuning_starts_from_the_probed_head(probed_run):
    probed = keras_team.load_model(probed_run / "stages" / "transfer.keras").head.get_weights()
    tuned = keras_team.load_model(probed_run / "stages" / "fine_tune.keras").head.get_weights()
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(probed, tuned))
    assert any(np.abs(a).max() > 0.01 for a in probed)  # a trained head, not zeros


@pytest.mark.large
def test_the_source_stage_trains_the_leader_with_its_own_augmentation_and_label_smoothing(tmp_path):
    settings = ["leader.architecture=seed_cnn", "leader.epochs=1", "leader.augment=[crop]",
                "leader.label_smoothing=0.2", "transfer.keep=3", "transfer.epochs=1", "followers=[]",
                "baseline.epochs=1", "data.target.shots=2"]
    assert cli.main(["run", "--quiet", "--output-dir", str(tmp_path), *[a for s in settings for a in ("--set", s)]]) == 0
    leader = keras_team.load_model(tmp_path / "leader.keras")
    assert isinstance(leader.loss, keras_team.heads.SmoothedLoss) and leader.loss.label_smoothing == 0.2
    student = keras_team.load_model(tmp_path / "stages" / "transfer.keras")
    assert not isinstance(student.loss, keras_team.heads.SmoothedLoss)  # the target's members: the plain loss


def test_source_stage_options_are_checked_with_the_config():
    for override, field in (("leader.label_smoothing=1", "leader.label_smoothing"),
                            ("leader.augment=[rotate]", "leader.augment[0]")):
        with pytest.raises(KerasTeamError) as error:
            load_config(overrides=[override])
        assert error.value.field == field, str(error.value)


@pytest.mark.large
def test_keras_model_fit_still_fails_under_multi_worker_mirrored_strategy():
    """keras-team/keras#20585, why probes fit through keras_team.distribute.fit on a cluster: once this fails,
    Keras' own fit works there and the package's multi-worker loop can go."""
    for result in two_workers("model_fit"):
        assert "PerReplica" in result["fit"], result


@pytest.mark.large
def test_a_probe_on_two_workers_stops_and_restores_alike_and_as_on_one_machine():
    from tests.helpers import blobs

    chief, other = two_workers("probe")
    assert chief == other  # the same strength, stopping epochs and (restored) weights, bit for bit
    keras.utils.set_random_seed(0)
    (x, y), (vx, vy) = blobs(40), blobs(40, seed=1)
    x, vx = (a.reshape(len(a), -1).astype("float32") / 255 for a in (x, vx))
    model = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Dense(5, name="logits")])
    fit = probe.fit_probe(model, (x, y), (vx, vy), l2=(1e-3, 1.0), epochs=30, patience=3, batch_size=20, seed=0)
    assert (fit.l2, {str(k): s.epoch for k, s in fit.scores.items()}) == (chief["l2"], chief["epochs"])
    assert max(fit.scores[k].epoch for k in fit.scores) < 30  # early stopping did stop (and restore) a fit
    assert all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(model.get_weights(), chief["weights"]))
