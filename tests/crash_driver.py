"""`keras-team run` that is SIGKILLed (or meets a full disk) at one checkpoint write of one stage.

Used by tests/test_crash.py in a subprocess:

    python -m tests.crash_driver WHAT:STAGE:N run --output-dir DIR ...

The stages checkpoint after every epoch here (`recipe.CHECKPOINT_SECONDS = 0`),
and at the N-th checkpoint write of STAGE (a `save_weights` under
``backup/STAGE/``) the process

- ``before``: is killed as the write begins (an epoch just ended);
- ``torn``: writes the weights, cuts the file to half its size and is killed
  (a write in progress);
- ``written``: writes the weights whole and is killed before anything else;
- ``full``: writes half the weights, then the write fails with ENOSPC.

``none:-:0`` runs without a fault.
"""

import errno
import os
import signal
import sys

import keras

from keras_team.app import cli, recipe


def main(fault: str, argv: list[str]) -> int:
    what, stage, n = fault.split(":")
    recipe.CHECKPOINT_SECONDS = 0
    original = keras.Model.save_weights
    writes = 0

    def save_weights(self, filepath, *args, **kwargs):
        nonlocal writes
        if f"{os.sep}backup{os.sep}{stage}{os.sep}" not in str(filepath):
            return original(self, filepath, *args, **kwargs)
        writes += 1
        if writes != int(n):
            return original(self, filepath, *args, **kwargs)
        if what == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, filepath, *args, **kwargs)
        if what in ("torn", "full"):
            os.truncate(filepath, os.path.getsize(filepath) // 2)
        if what == "full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
        os.kill(os.getpid(), signal.SIGKILL)

    keras.Model.save_weights = save_weights
    sys.argv[1:] = argv  # as the command line (a run on a cluster starts this driver again as its child)
    return cli.main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
