"""Files written whole or not at all, and Keras models read with a clear error.

Every writer of the package goes through `atomic_path` (a file) or
`atomic_dir` (a directory): the new content is built in a temporary sibling,
flushed to disk (`fsync`) and renamed into place, so a process killed at any
moment leaves either the old content or the new one, never half of it. A
leftover temporary sibling starts with ``.tmp-`` and is never read as good.
`load_model` is the one way the package reads a `.keras` file.

Example:
    >>> path = pathlib.Path(getfixture("tmp_path")) / "note.txt"
    >>> write_text(path, "hello")
    >>> path.read_text()
    'hello'
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import shutil
import traceback
import uuid
import zipfile
from collections.abc import Iterator

from keras_team.errors import KerasTeamError

TEMPORARY_PREFIX = ".tmp-"


def _file_mode() -> int:
    """rw for whom the umask allows, as `open()` and `cp` give."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: pathlib.Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _sibling(path: pathlib.Path) -> pathlib.Path:
    """A fresh temporary name next to `path` that keeps its full name as suffix (`.weights.h5` stays one)."""
    return path.with_name(f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yield a temporary sibling of `path` to write; on success it is synced and renamed onto `path`.

    A failure (or a kill) leaves `path` as it was.

    Example:
        >>> target = pathlib.Path(getfixture("tmp_path")) / "model.weights.h5"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_bytes(b"weights")
        >>> target.read_bytes(), tmp.exists()
        (b'weights', False)
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as error:
        if error.filename is None:  # a write() that failed (e.g. a full disk) names no file: say which
            error.filename = str(tmp)
        raise
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = False) -> Iterator[pathlib.Path]:
    """Yield a temporary sibling directory to fill; on success it is renamed onto `path`.

    `path` must not exist unless `replace`; then the old directory is swapped
    out only once the new one is complete, and deleted after. A failure
    leaves `path` as it was and removes the partial directory.

    Example:
        >>> target = pathlib.Path(getfixture("tmp_path")) / "1"
        >>> with atomic_dir(target) as building:
        ...     _ = (building / "saved_model.pb").write_bytes(b"graph")
        >>> sorted(p.name for p in target.iterdir())
        ['saved_model.pb']
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    building = _sibling(path)
    building.mkdir()
    try:
        yield building
        move_into_place(building, path, replace=replace)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def move_into_place(source: str | os.PathLike, path: str | os.PathLike, *, replace: bool = False) -> None:
    """Sync the file or directory `source` and rename it to `path` (on the same file system).

    A file replaces `path`. A directory `path` must not exist unless
    `replace`; then the old one is swapped out only once `source` is
    complete, and deleted after. On failure `path` is as it was.

    Example:
        >>> root = pathlib.Path(getfixture("tmp_path"))
        >>> _ = (root / ".tmp-1234abcd-a.txt").write_text("new")
        >>> move_into_place(root / ".tmp-1234abcd-a.txt", root / "a.txt")
        >>> (root / "a.txt").read_text()
        'new'
    """
    source, path = pathlib.Path(source), pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        _fsync(source)
        os.replace(source, path)
        _fsync(path.parent)
        return
    for file in source.rglob("*"):
        if file.is_file():
            _fsync(file)
    old = None
    if replace and path.exists():
        old = _sibling(path)
        os.replace(path, old)
    try:
        os.rename(source, path)  # never onto a non-empty directory: a version someone else wrote stays
    except OSError:
        if old is not None:
            os.replace(old, path)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old)
    _fsync(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically.

    Example:
        >>> write_text(pathlib.Path(getfixture("tmp_path")) / "a.txt", "x")
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically; on a full disk the error says how many bytes it needed.

    Example:
        >>> write_bytes(pathlib.Path(getfixture("tmp_path")) / "a.bin", b"x")
    """
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as error:
        if not is_out_of_space(error):
            raise
        raise needing(error, len(data)) from error


def needing(error: OSError, needed: int, *, at_least: bool = False) -> OSError:
    """`error` (a full disk) restated with the bytes the write needed.

    Example:
        >>> needing(OSError(errno.ENOSPC, "No space left on device", "/data/x"), 2048)
        OSError(28, 'No space left on device; 2,048 bytes needed')
    """
    return OSError(error.errno, f"{error.strerror}; {'at least ' if at_least else ''}{needed:,} bytes needed", error.filename)


def read_json_mapping(path: str | os.PathLike, key: str) -> dict | None:
    """The JSON object in `path` when it is whole and holds a mapping under `key`; None otherwise (missing, torn, foreign).

    Example:
        >>> path = pathlib.Path(getfixture("tmp_path")) / "state.json"
        >>> _ = path.write_text('{"stages": {}}')
        >>> read_json_mapping(path, "stages"), read_json_mapping(path, "config")
        ({'stages': {}}, None)
    """
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get(key), dict) else None


def remove_temporaries(directory: str | os.PathLike) -> list[pathlib.Path]:
    """Delete what a killed writer left in `directory` (its `.tmp-` siblings); return what was removed.

    Example:
        >>> root = pathlib.Path(getfixture("tmp_path"))
        >>> _ = (root / ".tmp-1234abcd-team.keras").write_bytes(b"half")
        >>> [p.name for p in remove_temporaries(root)]
        ['.tmp-1234abcd-team.keras']
    """
    removed = []
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return removed
    for leftover in directory.glob(f"{TEMPORARY_PREFIX}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
        removed.append(leftover)
    return removed


def is_out_of_space(error: BaseException) -> bool:
    """Whether `error` is a full disk or quota (`ENOSPC`, `EDQUOT`).

    Example:
        >>> is_out_of_space(OSError(errno.ENOSPC, "No space left on device"))
        True
    """
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def describe_keras_file(path: str | os.PathLike) -> str | None:
    """What is wrong with a `.keras` file, or None when it looks like one.

    Example:
        >>> bad = pathlib.Path(getfixture("tmp_path")) / "bad.keras"
        >>> _ = bad.write_bytes(b"junk")
        >>> describe_keras_file(bad)
        'the file is not a .keras archive (not a zip file: corrupt, truncated or another format)'
    """
    path = pathlib.Path(path)
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a file"
    if not zipfile.is_zipfile(path):
        return "the file is not a .keras archive (not a zip file: corrupt, truncated or another format)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        return f"the .keras archive is damaged ({error})"
    missing = [name for name in ("config.json", "model.weights.h5") if name not in names]
    if missing:
        return f"the .keras archive lacks {', '.join(missing)}"
    if broken:
        return f"the .keras archive is damaged ({broken} fails its checksum)"
    return None


def load_model(filepath: str | os.PathLike, custom_objects: dict | None = None, compile: bool = True,
               safe_mode: bool = True, *, field: str | None = None):
    """`keras.models.load_model`, with a one-line `KerasTeamError` on `filepath` for a file that is not a model.

    The archive is checked first (missing, not a zip, truncated, damaged);
    then Keras rebuilds it, and any error of that is Keras' own. The
    package's classes are registered by `import keras_team`, so
    `keras.models.load_model` serves as well.

    Args:
        field: the config field (or command-line argument) the path came
            from, for the command line: errors name it, and a file Keras
            cannot rebuild is a `KerasTeamError` too (Keras' error chained;
            one raised in the package's own code is a bug and passes).

    Example:
        >>> load_model("missing.keras")
        Traceback (most recent call last):
        ...
        keras_team.errors.KerasTeamError: filepath='missing.keras' is not valid: expected a readable Keras .keras model (no such file)
        >>> load_model("missing.keras", field="leader.path")
        Traceback (most recent call last):
        ...
        keras_team.errors.KerasTeamError: leader.path='missing.keras' is not valid: expected a readable Keras .keras model (no such file)
    """
    problem = describe_keras_file(filepath)
    if problem is not None:
        raise KerasTeamError(field or "filepath", str(filepath), f"a readable Keras .keras model ({problem})")
    import keras

    import keras_team.team  # noqa: F401  (registers the package's models and layers with Keras)

    try:
        return keras.models.load_model(filepath, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
    except (TypeError, ValueError, KeyError) as error:  # what Keras raises for a file it cannot rebuild
        if field is None or _raised_in_the_package(error):
            raise
        first = str(error).splitlines()[0] if str(error) else ""
        raise KerasTeamError(field, str(filepath), f"a .keras model Keras can rebuild ({type(error).__name__}: "
                             f"{first})") from error


def _raised_in_the_package(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from or during, came from a frame of the library's own code."""
    while error is not None:
        frames = traceback.walk_tb(error.__traceback__)
        modules = {frame.f_globals.get("__name__", "") for frame, _ in frames}
        if any(m.startswith("keras_team.") and m != __name__ for m in modules):
            return True
        error = error.__cause__ or error.__context__
    return False
