"""Tiny learnable data and leaders shared by the core tests."""

import contextlib
import functools
import logging

import keras
import numpy as np
import tensorflow as tf

import keras_team


def blobs(n=96, classes=5, shape=(8, 8, 1), seed=0):
    """uint8 images whose class is a bright patch position: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, *shape))
    for i, label in enumerate(y):
        row = 2 * (label % 4)
        col = 4 * (label // 4)
        x[i, row : row + 2, col : col + 4] = 255
    return x.astype("uint8"), y.astype("int32")


@contextlib.contextmanager
def tensorflow_messages():
    """The messages TensorFlow's Python logger emits within the block (e.g. its frequent-retracing warning)."""
    messages = []
    catcher = logging.Handler()
    catcher.emit = lambda record: messages.append(record.getMessage())
    tf.get_logger().addHandler(catcher)
    try:
        yield messages
    finally:
        tf.get_logger().removeHandler(catcher)


@functools.cache
def _trained_weights(classes, architecture, epochs, seed):
    keras.utils.set_random_seed(seed)
    leader = architecture((8, 8, 1), classes)
    leader.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = blobs(classes=classes, seed=seed)
    leader.fit(x, y, epochs=epochs, verbose=0)
    return leader.get_weights()


def trained_leader(classes=5, architecture=keras_team.zoo.seed_cnn, epochs=3, seed=0):
    """A fresh leader with trained weights (trained once per set of arguments, then copied)."""
    leader = architecture((8, 8, 1), classes)
    leader.set_weights(_trained_weights(classes, architecture, epochs, seed))
    return leader


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def two_workers(what: str, **env: str) -> list[dict]:
    """Run tests/chief_fit_worker.py as both workers of a loopback cluster (`env` added to theirs); each one's RESULT."""
    import json
    import os
    import subprocess
    import sys

    from keras_team.tuning.distributed import free_port

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=root, **env)
    env.pop("TF_CONFIG", None)
    workers = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    processes = [subprocess.Popen([sys.executable, "-m", "tests.chief_fit_worker", workers, str(i), what], cwd=root,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(2)]
    results = []
    for p in processes:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out[-3000:]
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    return results
