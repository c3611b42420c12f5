"""Checkpoints a killed `model.fit` resumes from: written whole or not at all, and cheap.

`BackupAndRestore` is Keras' callback of that name, made crash-safe:

- A checkpoint is two files in `backup_dir`: the weights (model and
  optimizer, `epoch-<n>.weights.h5`, a new name each time) and
  `training_metadata.json` (the epoch, the weights' file name and size).
  Both are written to a temporary sibling and renamed (`keras_team.files`),
  the metadata last: it is the commit. The older weights are deleted only
  after it. A process killed at any moment leaves the previous checkpoint
  or the new one, never a mix.
  The random seed states of the model's layers (dropout) are kept too.
- It checkpoints at the end of an epoch at most every `every_seconds`
  (0: every epoch): saving costs about 0.1 s, more than a small epoch.
- At the start of `fit` (or earlier, with `restore`) it restores the last
  checkpoint. One that cannot be read (a torn file of Keras' own callback,
  which rewrites it in place; a damaged disk) is moved aside to
  ``<backup_dir>.unreadable-<time>`` with a one-line warning, and the fit
  starts from its first epoch with the model's own weights.
- A write that fails for lack of space (or would: the free space is checked
  first, as h5py may crash on a full disk) raises `OSError` ENOSPC naming
  the file and the bytes it needed (`keras_team.files.needing`); the
  previous checkpoint is left intact, so the same fit continues once space
  is freed.

A resumed fit gives the weights of an uninterrupted one when its training
data continue where they stopped: `restore` says the epoch, and a seeded,
repeated `tf.data` pipeline skipped by that many epochs' batches draws the
same shuffles (and augmentations) the uninterrupted fit drew next (see
`keras_team.app.recipe`). `CSVLogger` continues the log of a resumed fit.

Example:
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile("adam", "mse")
    >>> backup = getfixture("tmp_path") / "backup"
    >>> x, y = np.ones((8, 3)), np.zeros((8, 2))
    >>> class Interrupt(keras.callbacks.Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         if epoch == 1:
    ...             raise RuntimeError("interrupted")
    >>> model.fit(x, y, epochs=3, verbose=0, callbacks=[BackupAndRestore(backup, every_seconds=0), Interrupt()])
    Traceback (most recent call last):
    RuntimeError: interrupted
    >>> BackupAndRestore(backup).restore(model)   # what a new fit resumes at
    2
    >>> history = model.fit(x, y, epochs=3, verbose=0, callbacks=[BackupAndRestore(backup, every_seconds=0)])
    >>> history.epoch, backup.exists()   # only the third epoch ran; a finished fit deletes its checkpoint
    ([2], False)
"""

from __future__ import annotations

import errno
import json
import math
import os
import pathlib
import shutil
import time
import warnings
from collections.abc import Callable

import keras
import numpy as np

from keras_team.files import atomic_path, is_out_of_space, needing, remove_temporaries, write_text
from keras_team.graph import start_fit_at

METADATA = "training_metadata.json"
EVERY_SECONDS = 5.0


class UnreadableCheckpoint(Exception):
    """A checkpoint whose metadata or weights cannot be read."""


def _read_metadata(directory: pathlib.Path) -> tuple[dict, pathlib.Path] | tuple[None, None]:
    """The committed metadata and its weights file; (None, None) when no checkpoint was committed."""
    path = directory / METADATA
    if not path.exists():
        return None, None
    try:
        metadata = json.loads(path.read_text())
        epoch, name, size = metadata["epoch"], metadata.get("weights"), metadata.get("bytes")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UnreadableCheckpoint(f"{METADATA}: {error}") from None
    if name is None:
        raise UnreadableCheckpoint("written in place by Keras' own BackupAndRestore, so possibly torn "
                                   "or ahead of its epoch")
    if not isinstance(epoch, int) or epoch < 0:
        raise UnreadableCheckpoint(f"{METADATA}: epoch {epoch!r}")
    weights = directory / name
    if not weights.is_file():
        raise UnreadableCheckpoint(f"{name} is missing")
    if weights.stat().st_size != size:
        raise UnreadableCheckpoint(f"{name} holds {weights.stat().st_size} bytes, {size} were written")
    return metadata, weights


def _remove_uncommitted(directory: pathlib.Path, keep: pathlib.Path | None) -> None:
    """Delete what a killed write left: temporaries, weights no committed metadata names."""
    remove_temporaries(directory)
    for weights in directory.glob("*.weights.h5"):
        if weights != keep:
            weights.unlink()


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore`, crash-safe, by time, setting aside what it cannot read.

    The checkpoint is restored at the start of `fit`, or earlier by
    `restore(model)`, which returns the epoch the fit will resume at (for a
    caller that positions its data there first).

    Args:
        backup_dir: the directory of this fit's checkpoint (nothing else may write there).
        every_seconds: the least time between two checkpoints (0: every epoch).
        warn: called with the one-line warning about a checkpoint set aside
            (default `warnings.warn`).
        delete_checkpoint: as for Keras' callback: delete it when `fit` ends.

    Example:
        >>> callback = BackupAndRestore(getfixture("tmp_path") / "b", every_seconds=10)
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> callback.restore(model)   # no checkpoint yet: from the start
        0
    """

    def __init__(self, backup_dir: str | os.PathLike, *, every_seconds: float = EVERY_SECONDS,
                 warn: Callable[[str], None] | None = None, delete_checkpoint: bool = True):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=delete_checkpoint)
        self.directory = pathlib.Path(backup_dir)
        self.every_seconds = every_seconds
        self.warn = warn or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3))
        self.initial_epoch: int | None = None  # known once restored
        self._last_save = 0.0

    # --- restore ---------------------------------------------------------
    def restore(self, model: keras.Model) -> int:
        """Restore the checkpoint into the compiled, built `model`; the epoch `fit` resumes at (0: from the start).

        A checkpoint that cannot be read is moved aside (see the module) and 0 returned.
        """
        if not model.built:
            raise ValueError(f"{type(self).__name__} needs a built model (call it on data or build() it first)")
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its variables are in the checkpoint
        self.initial_epoch = 0
        try:
            metadata, weights = _read_metadata(self.directory)
            _remove_uncommitted(self.directory, weights)
            if metadata is not None:
                self._load(model, weights, metadata)
                self.initial_epoch = metadata["epoch"]
        except UnreadableCheckpoint as error:
            self._set_aside(str(error))
        return self.initial_epoch

    def on_train_begin(self, logs=None):
        if self.initial_epoch is None:
            self.restore(self.model)
        start_fit_at(self.model, self.initial_epoch)
        self._last_save = time.monotonic()

    def _load(self, model: keras.Model, weights: pathlib.Path, metadata: dict) -> None:
        variables = [*model.variables, *(model.optimizer.variables if model.optimizer else ())]
        before = [np.array(v) for v in variables]
        seeds = _seed_states(model)
        try:
            model.load_weights(weights)
            saved = metadata.get("seeds", [])
            if len(saved) != len(seeds):
                raise ValueError(f"{len(saved)} random seed states saved, the model has {len(seeds)}")
            for variable, value in zip(seeds, saved):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        except (OSError, ValueError, KeyError, RuntimeError) as error:  # h5py/Keras on a damaged or foreign file
            for variable, value in zip(variables, before):  # load_weights may have assigned some already
                variable.assign(value)
            first = str(error).splitlines()[0] if str(error) else ""
            raise UnreadableCheckpoint(f"{weights.name}: {type(error).__name__}: {first}") from None

    def _set_aside(self, why: str) -> None:
        stamp = f"{self.directory.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
        aside, n = self.directory.with_name(stamp), 1
        while aside.exists():
            aside, n = self.directory.with_name(f"{stamp}-{n}"), n + 1
        os.replace(self.directory, aside)
        self.warn(f"the checkpoint in {self.directory} cannot be read ({why}); moved it to {aside} "
                  "and restarted this fit from its first epoch")

    # --- save ------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        last = self.delete_checkpoint and done >= (self.params or {}).get("epochs", math.inf)
        if not last and time.monotonic() - self._last_save >= self.every_seconds:  # the last is deleted at once
            self._write(done)

    def _write(self, done: int) -> None:
        """Commit the checkpoint of the `done` epochs that ran."""
        self.directory.mkdir(parents=True, exist_ok=True)
        previous, _ = _read_metadata_quietly(self.directory)
        name = f"epoch-{done}.weights.h5"
        target = self.directory / name
        need = self._bytes_needed(previous)
        if shutil.disk_usage(self.directory).free < need:  # h5py may crash on a full disk: do not start
            raise needing(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)), need, at_least=True)
        try:
            with atomic_path(target) as tmp:
                self.model.save_weights(tmp)
            size = target.stat().st_size
            seeds = [np.asarray(v).tolist() for v in _seed_states(self.model)]
            write_text(self.directory / METADATA, json.dumps({"epoch": done, "batch": 0,
                                                              "weights": name, "bytes": size, "seeds": seeds}))
        except OSError as error:
            full = is_out_of_space(error) or shutil.disk_usage(self.directory).free < need  # h5py may drop errno
            if not full:
                raise
            if previous is None or previous.get("weights") != name:
                target.unlink(missing_ok=True)  # new weights that no metadata names
            raise needing(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)), need, at_least=True) from error
        _remove_uncommitted(self.directory, target)
        self._last_save = time.monotonic()

    def _bytes_needed(self, previous: dict | None) -> int:
        """What the new weights file takes: as much as the last one, else the variables' bytes."""
        if previous and previous.get("bytes"):
            return int(previous["bytes"])
        variables = [*self.model.variables, *(self.model.optimizer.variables if self.model.optimizer else ())]
        return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def _seed_states(model: keras.Model) -> list:
    """The model's variables that are not weights: the states of its layers' random seed generators (dropout...).

    `save_weights` leaves them out; a resumed fit needs them to draw the masks an uninterrupted one draws.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _read_metadata_quietly(directory: pathlib.Path) -> tuple[dict | None, pathlib.Path | None]:
    try:
        return _read_metadata(directory)
    except UnreadableCheckpoint:
        return None, None


class CSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` continuing the log of a fit `checkpoint` resumes.

    A fit that starts afresh starts its log afresh; one resumed at epoch *n*
    keeps the rows of epochs before *n* (later ones are redone and logged
    again). Put it after its checkpoint in the callbacks.

    Example:
        >>> log = getfixture("tmp_path") / "fit.csv"
        >>> _ = log.write_text("epoch,loss\\n0,0.9\\n1,0.8\\n2,0.7\\n")
        >>> checkpoint = BackupAndRestore(getfixture("tmp_path") / "b")
        >>> checkpoint.initial_epoch = 2   # as `restore` sets it
        >>> CSVLogger(log, checkpoint).on_train_begin()
        >>> log.read_text().splitlines()
        ['epoch,loss', '0,0.9', '1,0.8']
    """

    def __init__(self, filename: str | os.PathLike, checkpoint: BackupAndRestore, separator: str = ","):
        super().__init__(str(filename), separator=separator, append=True)
        self.checkpoint = checkpoint

    def on_train_begin(self, logs=None):
        path, start = pathlib.Path(self.filename), self.checkpoint.initial_epoch or 0
        if start == 0:
            path.unlink(missing_ok=True)
        elif path.exists():
            header, *rows = path.read_text().splitlines(keepends=True)
            kept = [row for row in rows if _epoch_of(row, self.sep) < start]
            write_text(path, "".join([header, *kept]))
        super().on_train_begin(logs)


def _epoch_of(row: str, separator: str) -> int:
    try:
        return int(row.split(separator, 1)[0])
    except ValueError:  # a torn last row
        return 2**63
