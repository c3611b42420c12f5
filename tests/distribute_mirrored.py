"""On the CPU split in two logical devices (run by test_distribute, in a fresh process).

Logical devices must be configured before TensorFlow initialises its
devices, so this runs in a process of its own: it fits the tests' team on
one device and then mirrored, prints one JSON line, and then runs
`keras-team ARGS...` when given ARGS (exiting with its status).
"""

import json
import sys


def main(argv):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from keras_team.app import cli
    from keras_team.distribute import choose_strategy
    from tests.distribute_common import make_team, team_data

    train, _ = team_data()
    result = {}
    for name in ("default", "mirrored"):
        strategy = choose_strategy(name)
        with strategy.scope():
            team = make_team()
        history = team.fit(train, epochs=2, verbose=0, shuffle=False)
        result[name] = {"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"],
                        "weights": [w.tolist() for w in team.get_weights()]}
    result["probe"] = {name: _probe(choose_strategy(name)) for name in ("default", "mirrored")}
    print("RESULT " + json.dumps(result), flush=True)
    return cli.main(argv) if argv else 0


def _probe(strategy):
    """The default team's linear probe head (`heads.probe`) fitted by `fit_probe` on fixed features under `strategy`."""
    import keras

    from keras_team import heads, probe
    from tests.helpers import blobs

    keras.utils.set_random_seed(0)
    (x, y), (vx, vy) = blobs(40), blobs(41, seed=1)  # an odd validation split
    x, vx = (a.reshape(len(a), -1).astype("float32") / 255 for a in (x, vx))
    with strategy.scope():
        head = heads.probe(5)
        head.build((None, x.shape[1]))
        fit = probe.fit_probe(head, (x, y), (vx, vy), epochs=30, batch_size=20, seed=0)
    return {"l2": fit.l2, "scores": {str(k): list(v) for k, v in fit.scores.items()},
            "weights": [w.tolist() for w in head.get_weights()]}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
