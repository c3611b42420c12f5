"""One `keras-team run` process of the cluster tests (tests/test_cluster_run.py), with a fault as tests/crash_driver.py.

Usage: python -m tests.cluster_driver RECORD.npz FAULT run ...

Records, in RECORD.npz, the weights of every model the process saves (a
non-chief worker saves into its temporary folder) and the epoch each stage
checkpoint was restored at (`restored|<stage>`), so that the test can compare
workers that write nothing it could read.
"""

import sys

import numpy as np

from tests import crash_driver


def main(record: str, fault: str, argv: list[str]) -> int:
    from keras_team import caching, distribute
    from keras_team.app import workspace

    saved, restored = {}, {}
    save_model, restore = workspace.Workspace.save_model, distribute.restore

    def recording_save(self, model, name):
        saved[name] = [np.array(w) for w in model.get_weights()]
        return save_model(self, model, name)

    def recording_restore(checkpoint, model):
        restored[checkpoint.directory.name] = epoch = restore(checkpoint, model)
        return epoch

    workspace.Workspace.save_model = recording_save
    distribute.restore = caching.restore = recording_restore  # caching (fit_transfer) holds its own name for it
    try:
        return crash_driver.main(fault, argv)
    finally:
        arrays = {f"{name}|{i}": w for name, weights in saved.items() for i, w in enumerate(weights)}
        arrays.update({f"restored|{stage}": np.array(epoch) for stage, epoch in restored.items()})
        if arrays:  # the run's process, not its supervisor (which trains nothing)
            np.savez(record, **arrays)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
