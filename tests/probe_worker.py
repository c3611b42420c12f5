"""One worker of a two-process MultiWorkerMirroredStrategy cluster (run by test_probe's cluster tests).

Usage: python -m tests.probe_worker WORKERS INDEX probe|model_fit
probe: fits `keras_team.probe.fit_probe` on learnable blobs' flattened pixels and prints one JSON line
(the chosen strength, each strength's best epoch, the final weights). model_fit: plain Keras `model.fit` of
a Dense layer under the strategy (keras-team/keras#20585), printing `RESULT {"fit": "ok"}` or its error.
"""

import json
import os
import sys


def main(workers, index, what):
    from keras_team.distribute import cluster_config  # TensorFlow's runtime not started yet

    os.environ["TF_CONFIG"] = cluster_config(workers, index)
    import keras
    import tensorflow as tf

    from tests.helpers import blobs

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
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
