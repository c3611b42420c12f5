"""Cosine heads: imprinting sets the class means; usable as a transfer head and as a follower."""

import keras
import numpy as np
import pytest

import keras_team
from keras_team import Follower, KerasTeamError, Team, heads
from tests.helpers import blobs, trained_leader

CLASSES = 5


def normalised_means(features, labels):
    """The reference: mean of the L2-normalised features of each class, L2-normalised."""
    f = features.reshape(len(features), -1)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    means = np.stack([f[labels == c].mean(axis=0) for c in range(CLASSES)])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="module")
def data():
    x, y = blobs(n=120, seed=3)
    return x[:60], y[:60], x[60:], y[60:]


def test_imprinting_sets_the_weights_to_the_normalised_class_means_of_the_training_features(data):
    x, y, x_new, _ = data
    leader = trained_leader()
    student = keras_team.transfer(leader, keep="pool1", head=heads.cosine(CLASSES))
    heads.imprint(student, x, y)
    features = np.asarray(keras_team.body(leader, "pool1").predict(x, verbose=0))
    means = normalised_means(features, y)
    kernel = np.asarray(student.head.layers[-1].kernel)
    np.testing.assert_allclose(kernel.T, means, atol=1e-5)
    # Before any training, the model is the nearest-class-mean classifier of those features (by cosine).
    new = np.asarray(keras_team.body(leader, "pool1").predict(x_new, verbose=0)).reshape(len(x_new), -1)
    nearest = np.argmax(new @ means.T / np.linalg.norm(new, axis=1, keepdims=True), axis=-1)
    assert np.array_equal(np.argmax(student.predict(x_new, verbose=0), axis=-1), nearest)
    assert np.mean(nearest == data[3]) > 0.6  # the prototypes already classify the new examples


@pytest.mark.large
def test_a_cosine_head_trains_its_scale_and_round_trips_through_save(data, tmp_path):
    x, y, x_new, _ = data
    student = heads.imprint(keras_team.transfer(trained_leader(), keep=3, head=heads.cosine(CLASSES)), x, y)
    before = student.predict(x_new, verbose=0)
    student.compile(keras.optimizers.Adam(0.05), heads.LOSS)
    student.fit(x, y, epochs=1, batch_size=60, verbose=0)
    assert float(student.head.layers[-1].scale) != 10.0
    student.save(tmp_path / "student.keras")
    loaded = keras.models.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(loaded.predict(x_new, verbose=0), student.predict(x_new, verbose=0), atol=1e-5)
    assert not np.allclose(before, student.predict(x_new, verbose=0))


def test_a_prototype_follower_predicts_from_its_tap_as_imprinted(data):
    x, y, x_new, _ = data
    student = keras_team.transfer(trained_leader(), keep=3, head=heads.dense(CLASSES))
    features = np.asarray(student.body.predict(x, verbose=0))
    follower = heads.prototype(features, y, name="prototype")
    team = Team({"leader": student}, [Follower(follower, tap="features")])
    alone = follower.predict(np.asarray(student.body.predict(x_new, verbose=0)), verbose=0)
    np.testing.assert_allclose(team.predict(x_new, verbose=0)["prototype"], alone, atol=1e-5)
    np.testing.assert_allclose(np.asarray(follower.layers[-1].kernel).T, normalised_means(features, y), atol=1e-5)


def test_imprinting_refuses_a_head_that_is_not_cosine_and_a_class_without_examples(data):
    x, y, _, _ = data
    with pytest.raises(KerasTeamError, match="model=.*cosine classifier"):
        heads.imprint(keras_team.transfer(trained_leader(), keep=3, head=heads.dense(CLASSES)), x, y)
    with pytest.raises(KerasTeamError, match=r"labels=.*classes \[4\] missing"):
        heads.imprint(keras_team.transfer(trained_leader(), keep=3, head=heads.cosine(CLASSES)), x[y < 4], y[y < 4])
    with pytest.raises(KerasTeamError, match="scale"):
        heads.cosine(CLASSES, scale=0.0)


@pytest.mark.large
def test_a_run_with_a_cosine_head_starts_the_transfer_from_the_training_class_means(tmp_path):
    from keras_team.app import recipe
    from keras_team.app.config import load_config
    from keras_team.app.progress import Output
    from keras_team.files import load_model

    config = load_config(overrides=[
        f"output_dir={tmp_path}", "leader.architecture=seed_cnn", "leader.epochs=1", "transfer.keep=pool2",
        "transfer.head.kind=cosine", "transfer.head.hidden=[]", "transfer.epochs=1", "transfer.learning_rate=1e-9",
        "followers.0.epochs=1", "followers.1.epochs=1", "baseline.epochs=1"])
    recipe.run(config, output=Output("quiet"))
    student = load_model(tmp_path / "stages" / "transfer.keras")
    x, y = recipe.load_tasks(config)[1].splits["train"]  # the training split only
    features = np.asarray(student.body.predict(x, verbose=0))
    np.testing.assert_allclose(np.asarray(student.head.layers[-1].kernel).T, normalised_means(features, y), atol=1e-4)
