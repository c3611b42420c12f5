"""Distributed search on KerasTuner's own chief/worker mode.

KerasTuner reads three environment variables: `KERASTUNER_TUNER_ID`
("chief", or a worker's name such as "tuner0"), `KERASTUNER_ORACLE_IP` and
`KERASTUNER_ORACLE_PORT`. The chief holds the oracle and serves it over gRPC;
every worker builds the same tuner, asks the chief for a trial, runs it and
reports back, until the oracle says stop. Trials are written under the shared
tuner directory, so the chief reads every trial once the search ends.

`serve` is the chief's side. It uses KerasTuner's own `OracleServicer` and
stop condition; it only polls them every fraction of a second (KerasTuner's
`start_server` sleeps 20 s between checks once a worker has been told to
stop) and gives up when every worker has exited without finishing.

On one machine, a chief and two workers (what `keras-team tune --workers 2`
does; tests/test_tuning_cli.py runs it)::

    port = free_port()
    workers = [subprocess.Popen(cmd, env=worker_env(i, LOOPBACK, port)) for i in range(2)]
    with chief_env(LOOPBACK, port):
        serve(make_tuner(hypermodel, ...), alive=lambda: any(w.poll() is None for w in workers))
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from concurrent import futures

from keras_team.errors import KerasTeamError

LOOPBACK = "127.0.0.1"
TUNER_ID = "KERASTUNER_TUNER_ID"
ORACLE_IP = "KERASTUNER_ORACLE_IP"
ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
CHIEF = "chief"


def role() -> str | None:
    """"chief" or "worker" as KerasTuner's environment variables say; None when not distributed.

    Example:
        >>> print(role())  # KerasTuner's variables unset
        None
        >>> with chief_env(LOOPBACK, 8000):
        ...     role()
        'chief'
    """
    tuner_id = os.environ.get(TUNER_ID)
    if tuner_id is None:
        return None
    for name in (ORACLE_IP, ORACLE_PORT):
        if not os.environ.get(name):
            raise KerasTeamError(name, os.environ.get(name), f"set together with {TUNER_ID} (KerasTuner's distributed mode)")
    return CHIEF if CHIEF in tuner_id else "worker"


def free_port(ip: str = LOOPBACK) -> int:
    """A TCP port nobody listens on at `ip` right now.

    Example:
        >>> port = free_port()
        >>> with socket.socket() as server:
        ...     server.bind((LOOPBACK, port))  # free: this process can take it
    """
    with socket.socket() as probe:
        probe.bind((ip, 0))
        return probe.getsockname()[1]


def check_port(ip: str, port: int, field: str) -> None:
    """Raise a `KerasTeamError` on `field` unless this process can listen on `ip:port` now (as gRPC binds it).

    Example:
        >>> with socket.socket() as taken:
        ...     taken.bind((LOOPBACK, 0)); taken.listen()
        ...     check_port(LOOPBACK, taken.getsockname()[1], "tune.oracle_port")
        Traceback (most recent call last):
        ...
        keras_team.errors.KerasTeamError: tune.oracle_port=... is not valid: expected a port free at 127.0.0.1 (...)
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC: a port in TIME_WAIT is free
        try:
            probe.bind((ip, port))
        except OSError as error:
            raise KerasTeamError(field, port, f"a port free at {ip} ({error.strerror or error}; "
                                 "choose another, or leave it unset for a free one)") from None


def max_local_workers() -> int:
    """The most workers `--workers` starts on this machine: the CPU cores this process may use.

    Example:
        >>> 1 <= max_local_workers() <= (os.cpu_count() or 1)
        True
    """
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_cores(workers: int) -> list[set[int] | None]:
    """The cores of each of `workers` local workers: this process's cores dealt out, none shared (None: not pinnable).

    A TensorFlow process sizes its thread pools by the cores it may use, so
    two unpinned workers on two cores would each run two compute threads.

    Example:
        >>> cores = worker_cores(2)
        >>> len(cores), cores[0] == cores[1] == None or not cores[0] & cores[1]
        (2, True)
    """
    if not hasattr(os, "sched_setaffinity"):  # macOS
        return [None] * workers
    usable = sorted(os.sched_getaffinity(0))
    return [set(usable[i::workers]) for i in range(workers)]


def worker_env(index: int, ip: str, port: int) -> dict[str, str]:
    """The environment of worker `index`: this process's plus KerasTuner's three variables.

    Example:
        >>> worker_env(1, LOOPBACK, 8000)["KERASTUNER_TUNER_ID"]
        'tuner1'
    """
    return {**os.environ, TUNER_ID: f"tuner{index}", ORACLE_IP: ip, ORACLE_PORT: str(port)}


@contextlib.contextmanager
def chief_env(ip: str, port: int) -> Iterator[None]:
    """Make this process KerasTuner's chief while the block runs (build the tuner inside it).

    Example:
        >>> with chief_env(LOOPBACK, 8000):
        ...     role()
        'chief'
    """
    saved = {name: os.environ.get(name) for name in (TUNER_ID, ORACLE_IP, ORACLE_PORT)}
    os.environ.update({TUNER_ID: CHIEF, ORACLE_IP: ip, ORACLE_PORT: str(port)})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def serve(tuner, *, alive: Callable[[], bool] = lambda: True, poll_seconds: float = 0.2) -> None:
    """Serve `tuner`'s oracle to the workers until the search is done (the chief's `search`).

    Args:
        tuner: a tuner built while this process is the chief (see `chief_env`).
        alive: whether any worker may still ask for trials; when it turns
            False before the oracle is done, the search failed.
        poll_seconds: how often to check.

    Usage (see the module's)::

        serve(tuner, alive=lambda: any(w.poll() is None for w in workers))
    """
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief  # KerasTuner's own servicer and stop rule

    tuner.save()
    servicer = oracle_chief.OracleServicer(tuner.oracle)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    address = f"{os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # gRPC's "Failed to bind to address"
        bound = 0
    if not bound:
        raise KerasTeamError(ORACLE_PORT, address, "a free ip:port this machine can bind (another process holds it)")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(tuner.oracle)):
            if not alive():
                raise KerasTeamError("workers", "all exited", "workers that run the search to its end (see their output above)")
            time.sleep(poll_seconds)
    finally:
        server.stop(grace=1)
