"""One worker of a two-process MultiWorkerMirroredStrategy cluster (run by test_distribute).

Usage: python -m tests.distribute_worker WORKERS INDEX OUT_DIR EPOCHS
Trains the tests' tiny team with `keras_team.distribute.fit`; the chief
writes a CSV log and checkpoints under OUT_DIR. Prints one JSON line: the
epochs this run trained and a digest of the final weights.
"""

import json
import os
import sys

workers, index, out_dir, epochs = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
from keras_team.distribute import cluster_config  # noqa: E402 (no TensorFlow import yet)

os.environ["TF_CONFIG"] = cluster_config(workers, index)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_team import distribute  # noqa: E402
from tests.distribute_common import make_team, team_data  # noqa: E402

strategy = distribute.choose_strategy("multi_worker")  # before anything starts TensorFlow's runtime
train, validation = team_data()
with strategy.scope():
    team = make_team()
history = distribute.fit(
    team, train, epochs=epochs, validation_data=validation, checkpoint_dir=os.path.join(out_dir, "checkpoints"),
    callbacks=[keras.callbacks.CSVLogger(os.path.join(out_dir, "log.csv"), append=True)], verbose=0,
)
weights = [w.tolist() for w in team.get_weights()]
print("RESULT " + json.dumps({"epochs": history.epoch, "logs": history.history, "weights": weights}), flush=True)
