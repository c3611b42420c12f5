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
    print("RESULT " + json.dumps(result), flush=True)
    return cli.main(argv) if argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
