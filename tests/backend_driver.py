"""The core on the Keras backend that KERAS_BACKEND names, and TensorFlow-only parts refused in one line.

Run by tests/test_backends.py in a subprocess (the backend is fixed when Keras
is imported): ``KERAS_BACKEND=jax python -m tests.backend_driver``: the tap
cache's fit, the tuner's feature cache, the refusals, the Team's fit, save,
load and `keras_team.predict`, and a KerasTuner search. Prints ``ok
<backend>`` when every check holds.
"""

import json
import os
import pathlib
import tempfile

import keras
import numpy as np
import tensorflow as tf

import keras_team
from keras_team import caching, distribute
from keras_team.errors import KerasTeamError
from keras_team.tuning import FeatureCache, TransferHyperModel, make_tuner
from tests.helpers import blobs


def refused(call, feature: str) -> None:
    """`call` raises one line that names the backend, the feature and how to switch."""
    try:
        call()
    except KerasTeamError as error:
        message = str(error)
        assert "\n" not in message and f"'{keras.backend.backend()}'" in message, message
        assert feature in message and "KERAS_BACKEND=tensorflow" in message, message
    else:
        raise AssertionError(f"{feature} ran on {keras.backend.backend()}")


def main() -> None:
    assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
    tmp = pathlib.Path(tempfile.mkdtemp())
    x, y = blobs(n=32)
    leader = keras_team.zoo.seed_cnn((8, 8, 1), 5)
    team = keras_team.Team(keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(5), name="leader"),
                           [keras_team.Follower(keras_team.zoo.mlp(5), tap="probs")])

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history = caching.fit_follower(team, "mlp", data, data, epochs=1, verbose=0)
    assert np.isfinite(history.history["val_loss"][0])

    body, cache = keras_team.body(leader, "pool2"), FeatureCache()
    first, again = cache.features(body, x), cache.features(body, x)
    assert (cache.hits, cache.misses) == (1, 1) and np.allclose(first, keras.ops.convert_to_numpy(body(x.astype("float32"))), atol=1e-2)

    refused(lambda: keras_team.export.saved_model(team, tmp / "serving", name="team"), "SavedModel")
    refused(lambda: keras_team.export.tflite(team, tmp / "team.tflite"), "LiteRT")
    refused(lambda: distribute.choose_strategy("mirrored"), "mirrored")

    kept = leader.get_weights()
    team.compile()
    team.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(kept, leader.get_weights())), "the caller's leader changed"
    team.save(tmp / "team.keras")
    loaded = keras.models.load_model(tmp / "team.keras")
    expected, got = team.predict(x, verbose=0), loaded.predict(x, verbose=0)
    assert all(np.allclose(expected[name], got[name], atol=1e-5) for name in expected)

    (tmp / "report.json").write_text(json.dumps({"class_names": list("abcde"), "ensemble": {}}))
    np.savez(tmp / "new.npz", x=x[:3])
    assert [len(p.classes) for p in keras_team.predict(tmp, tmp / "new.npz", top=2)] == [2, 2, 2]

    # a search whose trials train on this backend, its best model taking raw inputs
    tuner = make_tuner(TransferHyperModel(leader, 5, cuts=["fc1"]), max_trials=1, directory=tmp / "tune",
                       progress=False)
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert tuner.get_best_models()[0].predict(x, verbose=0).shape == (32, 5)
    print("ok", keras.backend.backend())


if __name__ == "__main__":
    main()
