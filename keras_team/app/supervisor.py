"""`keras-team run` on a cluster as a supervised child process: a bounded wait for the workers, signals answered.

While `tf.distribute.MultiWorkerMirroredStrategy()` waits for the other
workers, TensorFlow holds the interpreter and catches SIGINT and SIGTERM
itself: no Python timeout or handler of that process can run. So the
command-line process (the supervisor) starts the same command again as a
child, passing it the write end of a pipe. The child says on it when it
starts to wait (`joining`, with the workers) and when the cluster formed
(`joined`); its own output passes through untouched. The supervisor

- says once what it waits for, and stops the child after `timeout` seconds
  with one line naming the workers that did not answer;
- on SIGINT, SIGTERM or SIGHUP, stops the child (at once while it waits; after the
  cluster formed, SIGTERM, which the child turns into KeyboardInterrupt, and
  SIGKILL after `GRACE_SECONDS`) and exits with 130, 143 or 129 and one line;
- otherwise exits with the child's status.

Example:
    $ keras-team run --workers 10.0.0.1:2222,10.0.0.2:2222 --worker-index 0 --worker-timeout 600
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

CHANNEL = "_KERAS_TEAM_SUPERVISOR_FD"  # the child's environment: the pipe's file descriptor
GRACE_SECONDS = 10.0  # after SIGTERM, before SIGKILL (the child finishes its step and removes its temporary files)
POLL_SECONDS = 0.2
INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}  # each stops the run: 128 + its number

_channel: int | None = None  # in the child: where to say `joining` and `joined`


def adopt() -> bool:
    """In a supervised child: take the pipe from the environment (its own children do not inherit it), print every
    thread's Python stack should TensorFlow's C++ end the process (SIGABRT, SIGSEGV: `faulthandler`) and, on Linux,
    end with the supervisor should it be killed; whether supervised."""
    global _channel
    fd = os.environ.pop(CHANNEL, None)
    if fd is not None:
        _channel = int(fd)
        faulthandler.enable()  # before the supervisor's one line: where the run was
        if sys.platform.startswith("linux"):
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return _channel is not None


def supervised() -> bool:
    """Whether this process is the child of a supervisor."""
    return _channel is not None


@contextlib.contextmanager
def joining(workers: Sequence[str], index: int) -> Iterator[None]:
    """Around the creation of the cluster's strategy: tells the supervisor (if any) that this worker waits, then that
    the cluster formed; from then on SIGTERM is a KeyboardInterrupt here, so the run stops as on Ctrl-C.

    Example:
        >>> with joining(["10.0.0.1:2222", "10.0.0.2:2222"], 0):  # unsupervised: nothing to tell
        ...     pass
    """
    _tell("joining " + json.dumps({"workers": list(workers), "index": index}))
    yield
    if _channel is not None:  # TensorFlow's own SIGTERM handler would ignore the supervisor's stop
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    _tell("joined")


def _tell(line: str) -> None:
    global _channel
    if _channel is None:
        return
    try:
        os.write(_channel, (line + "\n").encode())
    except OSError:  # the supervisor is gone: nobody to tell
        os.close(_channel)
        _channel = None


def silent(host_port: str, seconds: float = 1.0) -> bool:
    """Whether nothing accepts a connection at `host_port` (a worker that has not started listens nowhere).

    Example:
        >>> silent("127.0.0.1:1")
        True
    """
    host, port = host_port.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError:
        return True
    return False


def not_joined(workers: Sequence[str], index: int) -> str:
    """The workers other than `index` that a chief waiting alone still waits for, as `1 (host:port), ...`: those that
    do not answer on their port, or every other worker when all answer.

    Example:
        >>> not_joined(["127.0.0.1:1", "127.0.0.1:2"], 0)
        '1 (127.0.0.1:2)'
    """
    others = [i for i in range(len(workers)) if i != index]
    missing = [i for i in others if silent(workers[i])] or others
    return ", ".join(f"{i} ({workers[i]})" for i in missing)


def supervise(command: Sequence[str], timeout: float, say: Callable[[str], None] = print) -> int:
    """Run `command` (a `keras-team run` that joins a cluster) as a child; its exit status, or 130/143 on SIGINT/SIGTERM,
    or 2 when the cluster does not form within `timeout` seconds (one line on stderr each time)."""
    read, write = os.pipe()
    stops: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _: stops.append(signum)) for s in INTERRUPTED}
    try:
        try:  # its own process group: Ctrl-C reaches the supervisor alone, which stops the child
            child = subprocess.Popen(command, env=dict(os.environ, **{CHANNEL: str(write)}), pass_fds=(write,),
                                     process_group=0)
        finally:
            os.close(write)
        return _watch(child, read, timeout, stops, say)
    finally:
        os.close(read)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _watch(child: subprocess.Popen, read: int, timeout: float, stops: list[int], say) -> int:
    waiting, deadline, pending = None, None, b""
    while True:
        if stops:
            _stop(child, at_once=waiting is not None and deadline is not None)
            what = "interrupted" if stops[0] == signal.SIGINT else f"stopped by {signal.Signals(stops[0]).name}"
            _error(f"{what}; run the same command again to resume")
            return INTERRUPTED[stops[0]]
        if deadline is not None and time.monotonic() > deadline:
            _stop(child, at_once=True)
            _error(f"error: workers {not_joined(**waiting)} did not join within {timeout:g} s: start them with the same "
                   "--workers and their --worker-index, or wait longer with --worker-timeout SECONDS")
            return 2
        ready, _, _ = select.select([read], [], [], POLL_SECONDS)
        if ready:
            data = os.read(read, 4096)
            if not data:  # the child closed the pipe: it ended (or is ending)
                return _status(child.wait(), waiting, deadline)
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if line.startswith(b"joining "):
                    waiting = json.loads(line[len(b"joining "):])
                    deadline = time.monotonic() + timeout
                    say(f"waiting for workers {not_joined(**waiting)} to join the cluster (at most {timeout:g} s: "
                        "--worker-timeout)")
                elif line == b"joined":
                    deadline = None


def _stop(child: subprocess.Popen, at_once: bool) -> None:
    """SIGKILL while the child waits for the cluster (TensorFlow ignores SIGTERM there); else SIGTERM, then SIGKILL."""
    if not at_once:
        child.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(GRACE_SECONDS)
            return
    child.kill()
    child.wait()


def _status(code: int, waiting: dict | None, deadline: float | None) -> int:
    """The supervisor's status for a child that ended by itself: its own, or 128 + the signal that killed it; one
    line where the child could not say why (a signal, or TensorFlow ending it while it waited for the workers)."""
    where = f" while it waited for workers {not_joined(**waiting)}" if deadline is not None else ""
    if code < 0:
        _error(f"the run was killed by {signal.Signals(-code).name}{where}; run the same command again to resume")
        return 128 - code
    if where and code not in (0, 2, 3):  # 2, 3: the child said why itself
        _error(f"error: the run ended with status {code}{where}: start them with the same --workers and their "
               "--worker-index, then run the same command again")
    return code


def _error(text: str) -> None:
    print(f"keras-team: {text}", file=sys.stderr, flush=True)
