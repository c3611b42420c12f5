"""One worker of a two-process MultiWorkerMirroredStrategy cluster (run by test_distribute).

Usage: python -m tests.distribute_worker WORKERS INDEX OUT_DIR EPOCHS
Trains the tests' tiny team with `keras_team.distribute.fit`; the chief
writes a CSV log and checkpoints under OUT_DIR. Prints one JSON line: the
epochs this run trained, its logs, the final weights and how many eager
reductions over the workers (`strategy.reduce`, e.g. reading a metric
variable outside a replica) the fit made.
"""

import json
import os
import sys


def main(workers, index, out_dir, epochs):
    from keras_team.distribute import cluster_config  # TensorFlow's runtime not started yet

    os.environ["TF_CONFIG"] = cluster_config(workers, index)
    import keras

    from keras_team import distribute
    from tests.distribute_common import make_team, team_data

    strategy = distribute.choose_strategy("multi_worker")  # before anything starts TensorFlow's runtime
    train, validation = team_data()
    with strategy.scope():
        team = make_team()
    reductions, reduce = [], strategy.reduce  # this strategy object's calls only
    strategy.reduce = lambda *args, **kwargs: reductions.append(1) or reduce(*args, **kwargs)
    history = distribute.fit(
        team, train, epochs=epochs, validation_data=validation, checkpoint_dir=os.path.join(out_dir, "checkpoints"),
        callbacks=[keras.callbacks.CSVLogger(os.path.join(out_dir, "log.csv"), append=True)], verbose=0,
    )
    weights = [w.tolist() for w in team.get_weights()]
    print("RESULT " + json.dumps({"epochs": history.epoch, "logs": history.history, "weights": weights,
                                        "eager_reductions": len(reductions)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
