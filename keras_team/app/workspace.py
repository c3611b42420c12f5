"""A run's output directory: atomic writes, finished stages, resume, a lock.

The directory holds `config.yaml` (the resolved config), `state.json` (the
stages finished so far, with their figures), `.lock` and the models. Opening
one is two steps, so that nothing is touched before every check has passed:

1. `Workspace.prepare` checks the path (a directory that can be made and
   written: a probe file is written and removed, see `check_writable`) and decides: a *new* run, a *resume* of the same config, or a
   *replace* (only ever a directory holding a keras-team run: `overwrite=true`
   for one that finished a stage; a run that finished no stage holds nothing
   and is replaced freely). A config that differs only in what comes after
   training (`AFTER_TRAINING`: export formats, the tune section) resumes the
   run, finished or not, and redoes its export. It leaves nothing behind.
2. `Workspace.start` takes the directory's lock (two runs never share one),
   moves a replaced run aside and creates the new one. The old run is removed
   only once the new run's first stage is saved.

Files are written whole or not at all (`keras_team.files`).

On several machines (`keras-team run --workers`) only the chief opens the
directory so; every other worker joins it as a `WorkerSpace`: it reads the
chief's state and finished models (the directory must be one every worker
reads, e.g. a shared filesystem) and writes only to a temporary folder it
removes.

Example:
    >>> from keras_team.app.config import load_config
    >>> ws = Workspace.prepare(getfixture("tmp_path") / "run", load_config())
    >>> with ws.start():
    ...     ws.finish("leader", {"seconds": 1.0})
    >>> Workspace.prepare(ws.root, load_config()).done("leader")     # the same config resumes
    True
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping

from keras_team.app.config import Config
from keras_team.errors import KerasTeamError
from keras_team.files import TEMPORARY_PREFIX, atomic_path, read_json_mapping, write_text

STATE = "state.json"
CONFIG = "config.yaml"
LOCK = ".lock"
FINAL_STAGE = "evaluate"
# Fields that say where or how to write, not what to compute: they may change on resume.
NOT_COMPARED = ("output_dir", "overwrite")
# Fields that change nothing the run trains or evaluates: a finished run rerun with only these
# changed keeps its stages and redoes its export (`keras-team tune` alone reads `tune`).
AFTER_TRAINING = ("export", "tune")
AFTER_TRAINING_STAGES = ("export",)


def _compared(config: Config) -> dict:
    data = config.to_dict()
    for key in NOT_COMPARED:
        data.pop(key, None)
    return data


def _trained(compared: dict) -> dict:
    """The part of a compared config that decides what is trained and evaluated.

    Example:
        >>> from keras_team.app.config import load_config
        >>> _trained(_compared(load_config(overrides=["export.formats=[tflite]"]))) == _trained(_compared(load_config()))
        True
    """
    return {key: value for key, value in compared.items() if key not in AFTER_TRAINING}


def _finished(state: dict, config: Config) -> bool:
    """Whether the run in `state` did everything `config` asks: evaluated and, when it exports, exported."""
    stages = state["stages"]
    return FINAL_STAGE in stages and (not config.export.formats or "export" in stages)


def _read_state(root: pathlib.Path) -> dict | None:
    """The run's state, or None when `root` holds no keras-team run."""
    return read_json_mapping(root / STATE, "stages")


def check_writable(root: str | os.PathLike, field: str = "output_dir") -> None:
    """`root` can be created and written: no file on the way, and a probe file can be made there.

    The probe (and every folder made for it) is removed, so nothing is left;
    a directory `os.access` calls writable may still refuse (``/proc``, a
    read-only mount, a full disk), hence the real write.

    Example:
        >>> check_writable("/proc/keras_team_out")
        Traceback (most recent call last):
        ...
        keras_team.errors.KerasTeamError: output_dir='/proc/keras_team_out' is not valid: expected a directory you may create and write to ([Errno 2] No such file or directory: '/proc/keras_team_out')
    """
    root = pathlib.Path(root)
    missing = []
    for ancestor in [root, *root.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                why = "this is a file" if ancestor == root else f"{ancestor} is a file"
                raise KerasTeamError(field, str(root), f"a directory path ({why})")
            break
        missing.append(ancestor)
    made = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        probe = root / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:8]}-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:  # whatever stops the probe stops the run: say it now, before any work
        raise KerasTeamError(field, str(root), f"a directory you may create and write to ({error})") from None
    finally:
        for folder in reversed(made):
            folder.rmdir()


def _inside(path: pathlib.Path, root: pathlib.Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


class Workspace:
    """The output directory of one run. Build it with `Workspace.prepare`."""

    def __init__(self, root: pathlib.Path, config: Config, state: dict, *, replace: bool, reconfigured: bool = False):
        self.root = root
        self.config = config
        self.state = state
        self.replace = replace
        self.reconfigured = reconfigured  # a resume whose config changed only after training (`AFTER_TRAINING`)
        self.replaced: pathlib.Path | None = None
        self._lock: int | None = None

    @classmethod
    def prepare(cls, output_dir: str | os.PathLike, config: Config, *,
                reads: Mapping[str, str | None] = ()) -> Workspace:
        """Check `output_dir` for this config; it is left as it was (a probe file is made and removed).

        Args:
            output_dir: the run directory.
            config: the run's config (`overwrite` allows replacing a run).
            reads: config field -> path of a file the run reads; replacing a
                directory that holds one is refused (it would be deleted).

        Example:
            >>> from keras_team.app.config import load_config
            >>> ws = Workspace.prepare(getfixture("tmp_path") / "new", load_config())
            >>> ws.replace, ws.state["stages"]
            (False, {})
        """
        root = pathlib.Path(output_dir)
        check_writable(root)
        fresh = {"config": _compared(config), "stages": {}}
        if not root.exists() or not any(p.name != LOCK for p in root.iterdir()):
            return cls(root, config, fresh, replace=False)
        state = _read_state(root)
        if state is None:
            raise KerasTeamError(
                "output_dir", str(root), "a new or empty directory, or a keras-team run's directory "
                "(this one holds other files; keras-team never replaces those, even with overwrite=true)"
            )
        compared = _compared(config)
        finished = _finished(state, config)
        if state.get("config") == compared and not finished:
            return cls(root, config, state, replace=False)
        if (isinstance(state.get("config"), dict) and state["config"] != compared
                and _trained(state["config"]) == _trained(compared)):
            # Only what comes after training changed: keep the trained stages, redo the export.
            stages = {k: v for k, v in state["stages"].items() if k not in AFTER_TRAINING_STAGES}
            parts = {k: v for k, v in state.get("parts", {}).items() if k not in AFTER_TRAINING_STAGES}
            return cls(root, config, {**state, "config": compared, "stages": stages, "parts": parts},
                       replace=False, reconfigured=True)
        if state["stages"] and not config.overwrite:
            why = "a finished run" if finished else "an unfinished run of another config"
            raise KerasTeamError(
                "output_dir", str(root), f"a new directory: it holds {why}; choose another "
                "--output-dir or pass --set overwrite=true to replace it"
            )
        for field, path in dict(reads).items():
            if path and _inside(pathlib.Path(path), root):
                raise KerasTeamError(
                    field, path, f"a file outside {root}: replacing that run would delete it "
                    "(copy it elsewhere first, or choose another --output-dir)"
                )
        return cls(root, config, fresh, replace=True)

    @contextlib.contextmanager
    def start(self) -> Iterator[Workspace]:
        """Lock the directory, move a replaced run aside, write config and state.

        The lock is held until the block ends. The replaced run is deleted
        when the first stage is recorded (`finish`).
        """
        if self.replace:
            with self._locked(self.root):  # nobody is using the run being replaced
                aside = self.root.with_name(f".{self.root.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(self.root, aside)
            self.replaced = aside
            self.state["replaces"] = str(aside)
            print(f"keras-team: moved the previous run to {aside}; it is deleted once this run's "
                  "first stage is saved", flush=True)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked(self.root):
            if not self.state["stages"] or self.reconfigured:
                write_text(self.root / CONFIG, self.config.to_yaml())
                self._save_state()
            yield self

    @contextlib.contextmanager
    def _locked(self, root: pathlib.Path) -> Iterator[None]:
        handle = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise KerasTeamError(
                    "output_dir", str(root), "a directory no other keras-team run is using "
                    "(another run holds its lock; wait for it or choose another --output-dir)"
                ) from None
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(handle)  # closing releases the lock

    def _save_state(self) -> None:
        write_text(self.root / STATE, json.dumps(self.state, indent=2))  # stages in run order

    def path(self, name: str) -> pathlib.Path:
        """A path inside the run directory."""
        return self.root / name

    def model_path(self, name: str) -> pathlib.Path:
        """Where to read the model file `name` a stage saved."""
        return self.path(name)

    writes = True  # whether this process writes the run directory (not a non-chief worker)

    def done(self, stage: str, part: str | None = None) -> bool:
        """Whether `stage` (or one `part` of it, e.g. a follower) finished earlier."""
        if part is None:
            return stage in self.state["stages"]
        return part in self.state.get("parts", {}).get(stage, {})

    def finish(self, stage: str, figures: dict, part: str | None = None) -> None:
        """Record `stage` (or one `part` of it) as finished with its figures.

        A finished stage replaces the records of its parts. The first stage
        recorded deletes the run this one replaced.
        """
        if part is not None:
            self.state.setdefault("parts", {}).setdefault(stage, {})[part] = figures
        else:
            self.state["stages"][stage] = figures
            self.state.get("parts", {}).pop(stage, None)
        self._save_state()
        replaced = self.state.pop("replaces", None)
        if replaced:
            shutil.rmtree(replaced, ignore_errors=True)
            self._save_state()

    def figures(self, stage: str, part: str | None = None) -> dict:
        """The figures `finish` recorded for `stage` (or one `part` of it)."""
        if part is None:
            return self.state["stages"][stage]
        return self.state["parts"][stage][part]

    def save_model(self, model, name: str) -> pathlib.Path:
        """Save a Keras model (or, for `*.weights.h5`, its weights) as `name` atomically."""
        target = self.path(name)
        with atomic_path(target) as tmp:
            if name.endswith(".weights.h5"):
                model.save_weights(tmp)
            else:
                model.save(tmp)
        return target

    def backup_dir(self, stage: str) -> pathlib.Path:
        """Where `BackupAndRestore` keeps an interrupted stage's last epoch."""
        return self.path(f"backup/{stage}")


class WorkerSpace(Workspace):
    """A non-chief worker's view of the chief's run directory: it reads it and writes only to a temporary folder.

    Its models and logs go to that folder (removed when `start`'s block
    ends); models of stages finished before it joined are read from the
    chief's directory, as is `state.json`. Join after the chief has started
    its workspace (`keras_team.distribute.agree` is the barrier).

    Example:
        >>> from keras_team.app.config import load_config
        >>> chief = Workspace.prepare(getfixture("tmp_path") / "run", load_config())
        >>> with chief.start():
        ...     chief.finish("leader", {"seconds": 1.0})
        >>> worker = WorkerSpace.join(chief.root, load_config())
        >>> with worker.start():
        ...     worker.done("leader"), worker.model_path("leader.keras") == chief.path("leader.keras")
        (True, True)
    """

    writes = False

    @classmethod
    def join(cls, output_dir: str | os.PathLike, config: Config) -> WorkerSpace:
        """The chief's run in `output_dir`, checked to be this config's."""
        root = pathlib.Path(output_dir)
        state = _read_state(root)
        if state is None or state.get("config") != _compared(config):
            why = "sees no run there" if state is None else "finds a run of another config there"
            raise KerasTeamError("output_dir", str(root), f"the chief's run directory, read by every worker (a shared "
                                 f"filesystem) with the same config: this worker {why}")
        return cls(root, config, state, replace=False)

    @contextlib.contextmanager
    def start(self) -> Iterator[WorkerSpace]:
        self.scratch = pathlib.Path(tempfile.mkdtemp(prefix="keras_team_worker_"))
        try:
            yield self
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def path(self, name: str) -> pathlib.Path:
        return self.scratch / name

    def model_path(self, name: str) -> pathlib.Path:
        own = self.scratch / name
        return own if own.exists() else self.root / name

    def backup_dir(self, stage: str) -> pathlib.Path:
        return self.root / f"backup/{stage}"  # the chief's checkpoint, restored after the chief (never written here)

    def _save_state(self) -> None:
        pass  # the chief records the stages
