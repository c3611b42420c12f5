"""How long a plain KerasTuner constructor takes on a real backbone's cut space, before and after.

KerasTuner's constructor builds the hypermodel until every conditional scope
of the space has been active once. The space before (commit `BEFORE`,
tuning/hypermodel.py read from git) offered every cut point and one
`unfreeze_of_<depth>` per depth, conditional on the cut: one build per
depth. The space now has one cut per distinct place and one `unfreeze`,
declared in `declare_hyperparameters`, so the constructor builds once.

Both constructors are a plain `keras_tuner.Hyperband(hypermodel,
objective="val_accuracy", max_epochs=3)` on a `keras.applications`
MobileNetV3Small leader (weights=None, 32x32x3, 5 classes). Now: the
constructor timed whole (median of `--rounds`), the models it builds counted.
Before: the builds counted with the model copy replaced by a tiny stand-in
(the whole old constructor took 836 s in issue 15), then the real old
constructor run for `--before-budget` seconds and stopped; its time is
estimated as the seconds per build so far x the builds counted (its builds
go from the shallowest cut to the deepest, so this is near the true figure).
Offline only.

Run from the repository root:

    python benchmarks/tuning_space.py          # writes benchmarks/results/tuning_space.json
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402

from _common import RESULTS, load_average, machine, write_json  # noqa: E402
from keras_team.tuning import hypermodel as current  # noqa: E402

NAME = "tuning_space"
BEFORE = "25d0575"  # main before issue 15: one conditional unfreeze per depth, every cut point offered
ROOT = pathlib.Path(__file__).resolve().parents[1]


def old_module():
    """tuning/hypermodel.py as of `BEFORE`, imported under another name (None outside a git checkout)."""
    try:
        source = subprocess.run(["git", "show", f"{BEFORE}:tuning/hypermodel.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = pathlib.Path(tempfile.mkdtemp()) / "old_hypermodel.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_hypermodel", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hyperband(hypermodel, directory) -> kt.Tuner:
    return kt.Hyperband(hypermodel, objective="val_accuracy", max_epochs=3, directory=str(directory),
                        project_name="p", overwrite=True)


def counted(module, stand_in=None):
    """Count the model copies `module`'s builds make (with `stand_in` instead of the copy, if given)."""
    real = module.transfer
    builds = []

    def transfer(*args, **kwargs):
        builds.append(1)
        return stand_in() if stand_in else real(*args, **kwargs)

    module.transfer = transfer
    return builds, lambda: setattr(module, "transfer", real)


def now(leader, rounds: int, directory) -> dict:
    hypermodel = current.TransferHyperModel(leader, 5)
    builds, restore = counted(current)
    seconds = []
    for _ in range(rounds):
        builds.clear()
        start = time.perf_counter()
        tuner = hyperband(hypermodel, directory)
        seconds.append(time.perf_counter() - start)
    restore()
    space = tuner.oracle.get_space().space
    return {"constructor_seconds_median": round(statistics.median(seconds), 3),
            "constructor_seconds": [round(s, 3) for s in seconds], "builds": len(builds),
            "hyperparameters": len(space), "hyperparameter_names": [h.name for h in space],
            "cut_choices": len(hypermodel.cuts)}


class _OutOfTime(Exception):
    pass


def before(module, leader, budget: float, directory) -> dict:
    hypermodel = module.TransferHyperModel(leader, 5)

    def stand_in():
        inputs = keras.Input((2,))
        return keras.Model(inputs, keras.layers.Dense(5)(inputs))

    builds, restore = counted(module, stand_in)
    tuner = hyperband(hypermodel, directory)
    restore()
    space = tuner.oracle.get_space().space
    real, done = module.transfer, []
    start = time.perf_counter()

    def transfer(*args, **kwargs):  # the real old constructor, stopped once the budget is spent
        if time.perf_counter() - start > budget:
            raise _OutOfTime
        done.append(1)
        return real(*args, **kwargs)

    module.transfer = transfer
    try:
        hyperband(hypermodel, directory)
    except _OutOfTime:
        pass
    finally:
        module.transfer = real
    elapsed = time.perf_counter() - start
    return {"commit": BEFORE, "builds": len(builds), "hyperparameters": len(space),
            "unfreeze_hyperparameters": sum(h.name.startswith("unfreeze_of_") for h in space),
            "cut_choices": len(hypermodel.cuts), "real_builds_run": len(done), "real_seconds_run": round(elapsed, 1),
            "constructor_seconds_estimated": round(elapsed / len(done) * len(builds), 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed constructors now")
    parser.add_argument("--before-budget", type=float, default=45, help="seconds of the real old constructor run")
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}.json"))
    args = parser.parse_args(argv)
    load_before = load_average()
    keras.utils.set_random_seed(0)
    leader = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, include_top=True, classes=5)
    directory = pathlib.Path(tempfile.mkdtemp(prefix="tuning_space-"))
    result = {"leader": "MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=5)",
              "tuner": "keras_tuner.Hyperband(max_epochs=3)", "now": now(leader, args.rounds, directory)}
    module = old_module()
    if module is not None:
        result["before"] = before(module, leader, args.before_budget, directory)
        result["speedup_estimated"] = round(
            result["before"]["constructor_seconds_estimated"] / result["now"]["constructor_seconds_median"], 1)
    result["machine"] = machine(load_before)
    path = write_json(args.output, result)
    print(f"now: {result['now']['constructor_seconds_median']} s, {result['now']['builds']} build(s), "
          f"{result['now']['hyperparameters']} hyperparameters, {result['now']['cut_choices']} cuts")
    if module is not None:
        old = result["before"]
        print(f"before ({BEFORE}): {old['builds']} builds, {old['hyperparameters']} hyperparameters, "
              f"{old['cut_choices']} cuts, ~{old['constructor_seconds_estimated']} s (estimated from "
              f"{old['real_builds_run']} real builds in {old['real_seconds_run']} s)")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
