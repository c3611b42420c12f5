"""A search's state files and trial checkpoints written whole: the one adapter to KerasTuner's private file layout.

KerasTuner 1.4 writes `oracle.json`, `tuner0.json` and `trial_*/trial.json`
in place, and a trial's checkpoint at every better epoch: a kill or a full
disk mid-write leaves a file its reload cannot read. The package's tuners
(`keras_team.tuning.search.make_tuner`) write them whole (temporary sibling,
fsync, rename) and a trial's checkpoint once, when its training ends, through
overrides on their own tuner and oracle objects: KerasTuner itself, and any
other search in the process, are left as they are. A remote directory
(`gs://...`) is written by KerasTuner's own `tf.io.gfile` writer.

A trial's checkpoint holds its best epoch's model weights only, and
`get_best_models()` (the public `Tuner.load_model`) loads them into the model
`build` makes, with its fresh optimizer: KerasTuner's checkpoint also holds the
optimizer's state of the trial's last phase, which a rebuilt model's unbuilt
optimizer cannot take ("Skipping variable loading for optimizer").

The overridden methods (`Oracle._save_trial`, `SaveBestEpoch._save_model`,
`Tuner._build_and_fit_model`) and the names read (`Tuner._try_build`,
`_get_checkpoint_fname`, `_get_tuner_fname`, `_is_worker`) are KerasTuner's private API, checked here
against the versions this module was written for.

Example:
    >>> write_json(f"{tmp}/oracle.json", {"trials": 0})
    '{"trials": 0}'
"""

from __future__ import annotations

import errno
import json
import pathlib
import shutil
import types
import warnings
import weakref

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.engine import tuner_utils

from keras_team.files import atomic_path, write_text

TESTED = ("1.4.",)  # KerasTuner versions whose private methods below were read
# Room kept free beyond a checkpoint's weights (its HDF5 structure).
CHECKPOINT_OVERHEAD = 1 << 20

if not kt.__version__.startswith(TESTED):
    warnings.warn(f"keras_team.tuning writes KerasTuner's files through its private API, read for KerasTuner "
                  f"{', '.join(v + 'x' for v in TESTED)}; this is {kt.__version__}", RuntimeWarning, stacklevel=2)


def _remote(path) -> bool:
    return "://" in str(path)


def write_json(path, obj) -> str:
    """KerasTuner's `utils.save_json`, written whole on a local disk; the JSON text."""
    if _remote(path):
        return kt_utils.save_json(path, obj)
    text = json.dumps(obj)
    write_text(path, text)
    return text


def _save_oracle(oracle: kt.Oracle) -> None:
    write_json(oracle._get_oracle_fname(), oracle.get_state())


def _save_trial(oracle: kt.Oracle, trial) -> None:
    write_json(pathlib.Path(oracle._get_trial_dir(trial.trial_id)) / "trial.json", trial.get_state())


def whole_oracle(oracle):
    """`oracle` (a KerasTuner `Oracle`; a worker's client is left as it is) saving its state and trials whole."""
    if isinstance(oracle, kt.Oracle):
        oracle.save = types.MethodType(_save_oracle, oracle)
        oracle._save_trial = types.MethodType(_save_trial, oracle)
    return oracle


class BestEpoch(tuner_utils.SaveBestEpoch):
    """KerasTuner's `SaveBestEpoch`, keeping the best epoch's weights in memory and writing them whole when
    training ends (one write a trial, not one per better epoch: each cost 0.2 s of a cached trial's 8 s).

    A disk without room for them is an ENOSPC `OSError` before h5py starts
    (h5py can crash the process when the disk fills).
    """

    best_weights = None

    def _save_model(self):
        self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is None:
            return
        path = pathlib.Path(self.filepath)
        last = self.model.get_weights()
        self.model.set_weights(self.best_weights)
        try:
            if _remote(self.filepath):
                _weights_only(self.model).save_weights(self.filepath)
                return
            needed = CHECKPOINT_OVERHEAD + sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in last)
            free = shutil.disk_usage(path.parent).free
            if free < needed:
                raise OSError(errno.ENOSPC, f"No space left on device ({needed:,} bytes needed, {free:,} free)",
                              str(path.parent))
            with atomic_path(path) as tmp:
                _weights_only(self.model).save_weights(tmp)
        finally:
            self.model.set_weights(last)
            self.best_weights = None


def _weights_only(model: keras.Model) -> keras.Model:
    """A model over `model`'s own layers without its optimizer: what it saves or loads is the weights only."""
    return keras.Model(model.inputs, model.outputs)


class WholeState:
    """Tuner mixin: the tuner's state, its oracle's and its trials' checkpoints written whole (see the module)."""

    @property
    def oracle(self):
        return self._whole_oracle

    @oracle.setter
    def oracle(self, oracle):  # KerasTuner's constructor sets it (and a chief serves it) before anything is written
        self._whole_oracle = whole_oracle(oracle)

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_json(self._get_tuner_fname(), self.get_state())

    def _build_and_fit_model(self, trial, *args, **kwargs):
        # KerasTuner's run_trial passes one SaveBestEpoch to every execution of a trial: one BestEpoch stands for it.
        if not hasattr(self, "_best_epochs"):
            self._best_epochs = weakref.WeakKeyDictionary()
        kwargs["callbacks"] = [
            self._best_epochs.setdefault(c, BestEpoch(c.objective, c.filepath))
            if type(c) is tuner_utils.SaveBestEpoch else c for c in kwargs.get("callbacks", [])]
        return super()._build_and_fit_model(trial, *args, **kwargs)

    def load_model(self, trial):
        """The trial's model as `build` makes it (compiled, a fresh optimizer) with its best epoch's weights."""
        model = self._try_build(trial.hyperparameters)
        with kt.engine.tuner.maybe_distribute(self.distribution_strategy):
            _weights_only(model).load_weights(self._get_checkpoint_fname(trial.trial_id))
        return model
