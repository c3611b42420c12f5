"""What every benchmark shares: the results folder, the machine and its load, timing, the JSON file.

Timings depend on the machine and on what else runs on it, so every result
records the CPU count, the versions and the 1-minute load average before and
after the run (`machine`); compare ratios measured in one run, not seconds
across runs. Imported by the scripts of this folder (run from the repository
root as ``python benchmarks/<name>.py``, which puts this folder on the path).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from importlib.metadata import PackageNotFoundError, version

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
PATCHES_SOURCE = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel")
PATCHES_TARGET = ("hubble", "ihc", "moon", "page", "retina", "rocket", "text", "clock", "cell")
"""The photo patches' classes (one per scikit-image photograph): the leader learns the source's, the team the target's."""


def load_average() -> float:
    """The 1-minute load average now (a machine busy with other work slows every timing)."""
    return round(os.getloadavg()[0], 2)


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine(load_before: float) -> dict:
    """The machine, the versions, and the load average before the run (`load_before`) and now."""
    return {"cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "python": platform.python_version(), "tensorflow": _version("tensorflow"), "keras": _version("keras"),
            "load_average_before": load_before, "load_average_after": load_average()}


def write_json(path: str | os.PathLike, result: Mapping) -> pathlib.Path:
    """Write `result` as indented JSON to `path`, atomically (a temporary sibling, then a rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.replace(path)
    return path


@contextlib.contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """Wall and CPU seconds of the block, in the dict it yields once the block ends."""
    times: dict[str, float] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield times
    finally:
        times["wall_seconds"] = time.perf_counter() - wall
        times["cpu_seconds"] = time.process_time() - cpu


def time_calls(functions: Mapping[str, tuple[object, str]], seconds: MutableMapping[str, float]) -> None:
    """Replace each `getattr(owner, name)` of `functions` (part -> (owner, name)) by a wrapper adding its wall seconds to `seconds[part]`."""
    for part, (owner, name) in functions.items():
        function = getattr(owner, name)

        def timed(*args, _function=function, _part=part, **kwargs):
            start = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                seconds[_part] += time.perf_counter() - start

        setattr(owner, name, timed)


def median_latencies(calls: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 10) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin (one call of each per round).

    Round-robin, so that a burst of load from other processes hits every
    function alike; each is called `warmup` times first, untimed.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
