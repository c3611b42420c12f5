"""A run's output directory: atomic writes, finished stages, resume.

The directory holds `config.yaml` (the resolved config), `state.json` (the
stages finished so far, with their figures) and the models. A run resumes a
directory whose config matches; it refuses a finished run's directory, or
one holding another config, unless told to overwrite.

Example:
    >>> ws = Workspace.open("runs/digits", config)                 # doctest: +SKIP
    >>> ws.done("leader")                                          # doctest: +SKIP
    False
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

from keras_team.app.config import Config
from keras_team.errors import KerasTeamError

STATE = "state.json"
CONFIG = "config.yaml"
FINAL_STAGE = "evaluate"
# Fields that say where or how to write, not what to compute: they may change on resume.
NOT_COMPARED = ("output_dir", "overwrite")


@contextlib.contextmanager
def atomic_path(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temporary sibling of `path` (same suffix); renamed onto it on success.

    Example:
        >>> with atomic_path(pathlib.Path("out/team.keras")) as tmp:   # doctest: +SKIP
        ...     model.save(tmp)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    tmp = pathlib.Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: pathlib.Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _compared(config: Config) -> dict:
    data = config.to_dict()
    for key in NOT_COMPARED:
        data.pop(key, None)
    return data


class Workspace:
    """The output directory of one run."""

    def __init__(self, root: pathlib.Path, config: Config, state: dict):
        self.root = root
        self.config = config
        self.state = state

    @classmethod
    def open(cls, output_dir: str | os.PathLike, config: Config) -> Workspace:
        """Create, resume or (with `config.overwrite`) replace a run directory."""
        root = pathlib.Path(output_dir)
        if root.exists() and not root.is_dir():
            raise KerasTeamError("output_dir", str(root), "a directory path (this is a file)")
        state_path = root / STATE
        if root.exists() and any(root.iterdir()):
            if not state_path.exists():
                if not config.overwrite:
                    raise KerasTeamError("output_dir", str(root), "an empty or new directory, or a keras-team run's directory")
            else:
                state = cls._read_state(state_path)
                previous = state.get("config", {})
                same = previous == _compared(config)
                finished = FINAL_STAGE in state.get("stages", {})
                if same and not finished:
                    return cls(root, config, state)
                if not config.overwrite:
                    why = "a finished run" if finished else "an unfinished run of another config"
                    raise KerasTeamError(
                        "output_dir", str(root), f"a new directory: it holds {why}; choose another "
                        "--output-dir or pass --set overwrite=true to replace it"
                    )
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        workspace = cls(root, config, {"config": _compared(config), "stages": {}})
        write_text(root / CONFIG, config.to_yaml())
        workspace._save_state()
        return workspace

    @staticmethod
    def _read_state(path: pathlib.Path) -> dict:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise KerasTeamError("output_dir", str(path.parent), f"a run directory with a readable {STATE} ({error})") from error
        if not isinstance(state, dict):
            raise KerasTeamError("output_dir", str(path.parent), f"a run directory whose {STATE} is a JSON object")
        return state

    def _save_state(self) -> None:
        write_text(self.root / STATE, json.dumps(self.state, indent=2))  # stages in run order

    def path(self, name: str) -> pathlib.Path:
        """A path inside the run directory."""
        return self.root / name

    def done(self, stage: str) -> bool:
        """Whether `stage` finished in this or an earlier attempt."""
        return stage in self.state["stages"]

    def finish(self, stage: str, figures: dict) -> None:
        """Record `stage` as finished with its figures (seconds, metrics)."""
        self.state["stages"][stage] = figures
        self._save_state()

    def figures(self, stage: str) -> dict:
        """The figures `finish` recorded for `stage`."""
        return self.state["stages"][stage]

    def save_model(self, model, name: str) -> pathlib.Path:
        """Save a Keras model as `name` atomically: a failure leaves the old file."""
        target = self.path(name)
        with atomic_path(target) as tmp:
            model.save(tmp)
        return target

    def backup_dir(self, stage: str) -> pathlib.Path:
        """Where `BackupAndRestore` keeps an interrupted stage's last epoch."""
        return self.path(f"backup/{stage}")
