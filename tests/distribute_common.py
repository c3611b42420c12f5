"""The tiny team and data shared by the distribution tests and their subprocesses."""

import keras
import tensorflow as tf

import keras_team
from tests.helpers import blobs

BATCH = 16


def team_data(n=64):
    """Training and validation pipelines of learnable 8x8 blobs, global batch `BATCH`."""
    x, y = blobs(n)
    vx, vy = blobs(32, seed=1)
    return (tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH),
            tf.data.Dataset.from_tensor_slices((vx, vy)).batch(BATCH))


def make_team(seed=0, **compile_options):
    """A seeded, compiled team: a transferred seed CNN and an MLP follower."""
    keras.utils.set_random_seed(seed)
    leader = keras_team.transfer(keras_team.zoo.seed_cnn((8, 8, 1), 5), keep=3, head=keras_team.heads.dense(5))
    team = keras_team.Team({"leader": leader}, [keras_team.Follower(keras_team.zoo.mlp(5))])
    team.compile(optimizer=keras.optimizers.Adam(1e-2), **compile_options)
    return team
