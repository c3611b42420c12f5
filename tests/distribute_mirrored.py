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
    # The linear probe on an odd validation split (123 rows: 62 and 61 per replica in one batch failed).
    import numpy as np

    from keras_team import heads, probe

    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(45, 12)).astype("float32"), rng.integers(0, 3, 45)
    held_out = rng.normal(size=(123, 12)).astype("float32"), rng.integers(0, 3, 123)
    for name in ("default", "mirrored"):
        with choose_strategy(name).scope():
            head = heads.probe(3)
            head.build((None, 12))
            head.set_weights([np.full(w.shape, 0.01, "float32") for w in head.get_weights()])
            fit = probe.fit_probe(head, (features, labels), held_out, epochs=5, seed=0)
        result[name]["probe"] = {"l2": fit.l2, "val_loss": fit.score.loss,
                                 "weights": [w.tolist() for w in head.get_weights()]}
    print("RESULT " + json.dumps(result), flush=True)
    return cli.main(argv) if argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
