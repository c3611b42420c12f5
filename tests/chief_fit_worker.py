"""One worker of a two-process MultiWorkerMirroredStrategy cluster (run by the cluster tests of test_probe, test_caching).

Usage: python -m tests.chief_fit_worker WORKERS INDEX probe|follower|model_fit
probe: fits `keras_team.probe.fit_probe` on learnable blobs' flattened pixels and prints one JSON line
(the chosen strength, each strength's best epoch, the final weights). follower: `follower_fits` (an mlp
follower with dropout, fitted with a kept checkpoint, then resumed from it for more epochs). model_fit:
plain Keras `model.fit` of a Dense layer under the strategy (keras-team/keras#20585), printing
`RESULT {"fit": "ok"}` or its error.
"""

import json
import os
import sys


def follower_fits(checkpoint_dir: str) -> dict:
    """Fit an mlp follower (dropout 0.3) of an untrained seed_cnn leader on blobs for 2 epochs, checkpointing each;
    then fit it to 4 epochs with the same checkpoint (it resumes at 2). The weights and epochs of both fits."""
    import keras
    import tensorflow as tf

    import keras_team
    from keras_team.caching import fit_follower
    from keras_team.checkpoints import BackupAndRestore
    from tests.helpers import blobs

    keras.utils.set_random_seed(0)
    (x, y), (vx, vy) = blobs(40), blobs(20, seed=1)
    train, validation = (tf.data.Dataset.from_tensor_slices(d).batch(16) for d in ((x, y), (vx, vy)))
    team = keras_team.Team(keras_team.zoo.seed_cnn((8, 8, 1), 5),
                           [keras_team.Follower(keras_team.zoo.mlp(5, hidden=(16,), dropout=0.3), tap="logits")])
    result = {}
    for part, epochs in (("first", 2), ("resumed", 4)):
        checkpoint = BackupAndRestore(checkpoint_dir, every_seconds=0, delete_checkpoint=False)
        history = fit_follower(team, "mlp", train, validation, epochs=epochs, batch_size=16, seed=0,
                               optimizer=keras.optimizers.Adam(0.01), callbacks=[checkpoint], verbose=0)
        result[part] = {"epoch": history.epoch, "loss": history.history["loss"],
                        "weights": [w.tolist() for w in team.follower_graphs["mlp"].get_weights()]}
    return result


def main(workers, index, what):
    from keras_team.distribute import cluster_config  # TensorFlow's runtime not started yet

    os.environ["TF_CONFIG"] = cluster_config(workers, index)
    import tempfile

    import keras
    import tensorflow as tf

    from tests.helpers import blobs

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if what == "follower":
        with strategy.scope(), tempfile.TemporaryDirectory() as scratch:  # the non-chief's checkpoint is unused
            result = follower_fits(os.environ.get("CHECKPOINT_DIR") if index == 0 else scratch)
        print("RESULT " + json.dumps(result), flush=True)
        return
    keras.utils.set_random_seed(0)
    (x, y), (vx, vy) = blobs(40), blobs(40, seed=1)
    x, vx = (a.reshape(len(a), -1).astype("float32") / 255 for a in (x, vx))
    with strategy.scope():
        model = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Dense(5, name="logits")])
    if what == "model_fit":
        with strategy.scope():
            model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        try:
            model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(20), epochs=1, verbose=0)
            result = {"fit": "ok"}
        except Exception as error:  # what Keras raises is the finding
            result = {"fit": f"{type(error).__name__}: {str(error)[:200]}"}
    else:
        from keras_team import probe

        with strategy.scope():
            fit = probe.fit_probe(model, (x, y), (vx, vy), l2=(1e-3, 1.0), epochs=30, patience=3, batch_size=20, seed=0)
        result = {"l2": fit.l2, "epochs": {str(k): s.epoch for k, s in fit.scores.items()},
                  "weights": [w.tolist() for w in model.get_weights()]}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3])
