"""The supervisor of `keras-team run` on a cluster (keras_team/app/supervisor.py), with small Python children that
say on the pipe what a run says (`joining`, `joined`) and then hang, deaf to SIGTERM as TensorFlow's wait is, or die.
tests/test_cluster_run.py runs the real thing."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from keras_team.app import supervisor
from keras_team.tuning.distributed import free_port

CHILD = """
import os, signal, sys, time
from keras_team.app import supervisor
supervisor.adopt()
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as TensorFlow's handler, while the cluster forms
with supervisor.joining({workers!r}, 0):
    if {hang_in_wait}:
        time.sleep(600)
print("formed", flush=True)
{after}
"""


def _child(workers, hang_in_wait=False, after="time.sleep(600)"):
    return [sys.executable, "-c", CHILD.format(workers=workers, hang_in_wait=hang_in_wait, after=after)]


def _signal_soon(signum, seconds=1.5):
    threading.Timer(seconds, os.kill, (os.getpid(), signum)).start()


@pytest.fixture(autouse=True)
def _children_without_keras(monkeypatch):
    monkeypatch.setenv("_KERAS_TEAM_DEFER_REGISTRATION", "1")  # keras_team_cli's switch: the children start fast


@pytest.fixture
def workers():
    return [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]


def test_a_wait_for_workers_that_never_join_ends_at_the_bound_naming_them(workers, capsys):
    said = []
    started = time.monotonic()
    assert supervisor.supervise(_child(workers, hang_in_wait=True), 2, said.append) == 2
    assert time.monotonic() - started < 60
    names = f"1 ({workers[1]}), 2 ({workers[2]})"
    assert said == [f"waiting for workers {names} to join the cluster (at most 2 s: --worker-timeout)"]
    err = capsys.readouterr().err
    assert err.startswith(f"keras-team: error: workers {names} did not join within 2 s") and err.count("\n") == 1, err


def test_a_worker_that_listens_is_not_named_as_missing(workers):
    import socket

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        workers[2] = f"127.0.0.1:{listening.getsockname()[1]}"
        assert supervisor.not_joined(workers, 0) == f"1 ({workers[1]})"


@pytest.mark.parametrize("signum, status, line", [
    (signal.SIGTERM, 143, "keras-team: stopped by SIGTERM; run the same command again to resume"),
    (signal.SIGINT, 130, "keras-team: interrupted; run the same command again to resume"),
])
def test_a_signal_while_waiting_stops_the_deaf_child_at_once(workers, signum, status, line, capsys):
    before = signal.getsignal(signum)
    _signal_soon(signum)
    started = time.monotonic()
    assert supervisor.supervise(_child(workers, hang_in_wait=True), 600, lambda _: None) == status
    assert time.monotonic() - started < 30
    assert capsys.readouterr().err == line + "\n"
    assert signal.getsignal(signum) == before  # the supervisor's handler is gone again


def test_after_the_cluster_formed_sigterm_is_a_keyboard_interrupt_in_the_run(workers, capfd):
    after = "try:\n    time.sleep(600)\nexcept KeyboardInterrupt:\n    print('cleaned up', flush=True)\n    sys.exit(130)"
    ready = threading.Event()
    said = []

    def say(text):
        said.append(text)
        ready.set()

    def stop():
        ready.wait(60)
        time.sleep(1.0)  # `joined` follows at once; its handler too
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop).start()
    assert supervisor.supervise(_child(workers, after=after), 600, say) == 143
    out, err = capfd.readouterr()
    assert "formed\ncleaned up\n" in out  # the child's own output passes through, and its cleanup ran
    assert err.strip().splitlines()[-1] == "keras-team: stopped by SIGTERM; run the same command again to resume"


def test_a_run_killed_by_a_signal_is_one_line_and_128_plus_the_signal(workers, capsys):
    after = "os.kill(os.getpid(), signal.SIGKILL)"
    assert supervisor.supervise(_child(workers, after=after), 600, lambda _: None) == 128 + signal.SIGKILL
    assert capsys.readouterr().err == "keras-team: the run was killed by SIGKILL; run the same command again to resume\n"


def test_a_run_aborted_in_native_code_prints_where_before_its_one_line(workers, capfd):
    after = "def deep_in_the_run():\n    os.abort()\ndeep_in_the_run()"  # as TensorFlow's C++ would end it
    assert supervisor.supervise(_child(workers, after=after), 600, lambda _: None) == 128 + signal.SIGABRT
    err = capfd.readouterr().err
    assert "Fatal Python error: Aborted" in err and "in deep_in_the_run" in err  # faulthandler's stack of the run
    assert err.strip().splitlines()[-1] == ("keras-team: the run was killed by SIGABRT; run the same command again "
                                            "to resume")


def test_the_status_of_a_run_passes_through_and_the_pipe_is_not_inherited(tmp_path):
    script = ("import os, sys\nfrom keras_team.app import supervisor\nprint(supervisor.adopt(), "
              f"supervisor.CHANNEL in os.environ)\nsys.exit(3)")
    out = tmp_path / "out.txt"
    with open(out, "w") as sink:
        code = subprocess.run([sys.executable, "-c",
                               f"import sys\nfrom keras_team.app import supervisor\n"
                               f"sys.exit(supervisor.supervise([sys.executable, '-c', {script!r}], 5))"],
                              stdout=sink, timeout=60).returncode
    assert code == 3
    assert out.read_text() == "True False\n"  # supervised; the run's own children get no pipe


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child's parent-death signal is Linux's")
def test_a_run_does_not_outlive_its_killed_supervisor():
    child = "import os, time\nfrom keras_team.app import supervisor\nsupervisor.adopt()\nprint(os.getpid(), flush=True)\ntime.sleep(600)"
    parent = subprocess.Popen([sys.executable, "-c", "import sys\nfrom keras_team.app import supervisor\n"
                               f"supervisor.supervise([sys.executable, '-c', {child!r}], 600)"],
                              stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
