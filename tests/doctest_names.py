"""The small objects the docstring examples use, built only when an example names them.

Data are the offline digits (8x8x1 uint8): `source` (0-4), `target` (5-9, 5
shots) and its splits `x`, `y` (train), `xv`, `yv` (validation), `x_test`,
`y_test`, `x_train`. Models are tiny and trained a little: `leader` (a seed
CNN on the source), `model` (the same, named "digits"), `team` (the leader
and an MLP follower), `baseline`; `hypermodel` searches two cuts of the
leader and `tuner` has searched two trials of it. `tmp` is the example's own
scratch directory and `run_dir` a finished run's directory holding `team`. Trained objects are built once per session and shared:
examples read them, never train them further.
"""

from __future__ import annotations

import contextlib
import functools
import json
import pathlib
import re
import tempfile

import keras
import numpy as np

import keras_team

CLASSES = 5


@functools.cache
def _tasks():
    return keras_team.data.digits_tasks(shots=5, seed=0)


def _trained(name=None):
    keras.utils.set_random_seed(0)
    source, _ = _tasks()
    model = keras_team.zoo.seed_cnn(source.input_shape, CLASSES, **({"name": name} if name else {}))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*source.splits["train"], epochs=3, batch_size=64, verbose=0)
    return model


@functools.cache
def _leader():
    return _trained()


@functools.cache
def _model():
    return _trained("digits")


@functools.cache
def _team():
    keras.utils.set_random_seed(0)
    team = keras_team.Team({"leader": _leader()}, [keras_team.Follower(keras_team.zoo.mlp(CLASSES), name="mlp")])
    team.compile()
    team.fit(*_tasks()[1].splits["train"], epochs=2, verbose=0)
    return team


@functools.cache
def _run_dir():
    """A finished run's directory as `keras-team run` leaves it: `team` in team.keras, class names and weights in report.json."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="doctest-run-"))
    _team().save(root / "team.keras")
    report = {"class_names": list(_tasks()[1].class_names), "ensemble": {"weights": {"leader": 0.5, "mlp": 0.5}}}
    (root / "report.json").write_text(json.dumps(report))
    return str(root)


def _hypermodel():
    from keras_team.tuning import TransferHyperModel

    return TransferHyperModel(_leader(), CLASSES, cuts=["pool2", "fc1"], max_unfreeze=0, head_layers=[0])


@functools.cache
def _tuner():
    from keras_team.tuning import make_tuner

    keras.utils.set_random_seed(0)
    tuner = make_tuner(_hypermodel(), max_trials=2, directory=tempfile.mkdtemp(prefix="doctest-tuner-"),
                       progress=False)
    target = _tasks()[1]
    tuner.search(*target.splits["train"], validation_data=target.splits["validation"], epochs=1, verbose=0)
    return tuner


BUILDERS = {
    "source": lambda: _tasks()[0],
    "target": lambda: _tasks()[1],
    "task": lambda: _tasks()[1],
    "x": lambda: _tasks()[1].splits["train"][0],
    "y": lambda: _tasks()[1].splits["train"][1],
    "x_train": lambda: _tasks()[1].splits["train"][0],
    "xv": lambda: _tasks()[1].splits["validation"][0],
    "yv": lambda: _tasks()[1].splits["validation"][1],
    "x_test": lambda: _tasks()[1].splits["test"][0],
    "y_test": lambda: _tasks()[1].splits["test"][1],
    "leader": _leader,
    "model": _model,
    "team": _team,
    "baseline": lambda: keras_team.zoo.seed_cnn((8, 8, 1), CLASSES, name="baseline"),
    "run_dir": _run_dir,
    "hypermodel": _hypermodel,
    "tuner": _tuner,
}


def names(tmp: pathlib.Path, source: str) -> dict:
    """The namespace of one docstring whose examples read `source`."""
    wanted = set(re.findall(r"[A-Za-z_]\w*", source))
    namespace = {"keras": keras, "keras_team": keras_team, "np": np, "tmp": str(tmp)}
    namespace.update({name: build() for name, build in BUILDERS.items() if name in wanted})
    keras.backend.clear_session(free_memory=False)  # the names the builders took are free for the example
    keras.utils.set_random_seed(0)
    return namespace


@contextlib.contextmanager
def mocked_tfds(source: str, tmp: pathlib.Path):
    """TFDS's mock data (nothing downloads) while examples that read a TFDS dataset run."""
    if "tfds_" not in source:
        yield
        return
    import tensorflow_datasets as tfds

    for name in ("cifar10", "cifar100"):  # recorded split sizes, as `batch_size=-1` needs
        builder = tfds.builder(name, data_dir=tmp)
        builder.info.set_splits(tfds.core.SplitDict([
            tfds.core.SplitInfo(name=split, shard_lengths=[1500], num_bytes=0) for split in ("train", "test")]))
        pathlib.Path(builder.data_dir).mkdir(parents=True)
        builder.info.write_to_directory(builder.data_dir)
    with tfds.testing.mock_data(num_examples=1500, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(tmp)):
        yield
