"""Run a search: the tuner, honest validation data, and the trial table.

`make_tuner` builds one of KerasTuner's own tuners (random, bayesian,
hyperband, grid) around a `TransferHyperModel`, checks the budget and the
objective, records each trial's seconds and cache use, and fails the search
when every trial it ran failed. `trial_table` reads every trial back
(also after a resumed or distributed search) and `write_results` writes it
as CSV and JSON with a plot of the validation metric against the cut.

Example:
    >>> tuner = make_tuner(hypermodel, tuner="random", max_trials=2, directory=tmp, progress=False)
    >>> tuner.search(x, y, validation_data=cap_per_class(xv, yv, 10), epochs=1, verbose=0)
    >>> sorted(p.name for p in write_results(tuner, f"{tmp}/results").iterdir())
    ['score_by_cut.png', 'trials.csv', 'trials.json']
"""

from __future__ import annotations

import csv
import gc
import io
import json
import os
import pathlib
import time

import keras_tuner as kt
import numpy as np

from keras_team.errors import KerasTeamError
from keras_team.files import atomic_path, is_out_of_space, write_text
from keras_team.tuning.hypermodel import TransferHyperModel, describe
from keras_team.tuning.whole_state import WholeState

TUNERS = {
    "random": kt.RandomSearch,
    "bayesian": kt.BayesianOptimization,
    "hyperband": kt.Hyperband,
    "grid": kt.GridSearch,
}
TRIAL_RECORD = "keras_team_trial.json"
COLUMNS = (
    "trial", "status", "cut", "depth", "head_layers", "head_units", "dropout", "learning_rate",
    "unfreeze", "fine_tune_learning_rate", "epochs", "score", "seconds", "cache", "tuner_id", "error",
)


class _RecordsTrials:
    """Tuner mixin: records each trial's wall time and feature-cache use next to its
    trial.json, prints one line per trial, fails a search whose every trial failed, and keeps KerasTuner's
    per-trial garbage collection to what the search made."""

    progress = True

    def search(self, *args, **kwargs):
        # KerasTuner collects garbage before each trial's build; over the leader, TensorFlow and the data that
        # was a quarter of a cached trial (1.3 of 5.3 s). What exists before the search is left out of those
        # collections while it runs (Python's `gc.freeze`), and put back after.
        gc.collect()
        gc.freeze()
        try:
            return super().search(*args, **kwargs)
        finally:
            gc.unfreeze()

    def on_search_begin(self):
        super().on_search_begin()
        self.ran = {"completed": 0, "failed": 0}

    def run_trial(self, trial, *args, **kwargs):
        start = time.perf_counter()
        try:
            results = super().run_trial(trial, *args, **kwargs)
            record = {"seconds": round(time.perf_counter() - start, 3), "cache": self.hypermodel.last_cache,
                      "tuner_id": self.tuner_id}
            _write_json(pathlib.Path(self.get_trial_dir(trial.trial_id)) / TRIAL_RECORD, record)
        except Exception as error:  # counted, then raised again: KerasTuner records the trial as failed
            self.ran["failed"] += 1
            self.ran["last"] = f"{type(error).__name__}: {error}"
            if isinstance(error, OSError) and is_out_of_space(error):  # KerasTuner would retry it on the full disk
                raise DiskFull(error.errno, error.strerror, error.filename) from error
            raise
        self.ran["completed"] += 1
        if self.progress:
            print(progress_line(self, trial, results, record), flush=True)
        return results

    def on_search_end(self):
        super().on_search_end()
        if self.ran["failed"] and not self.ran["completed"]:
            raise KerasTeamError("search", str(self.project_dir),
                                 f"a search with a trial that completes: all {self.ran['failed']} trials it ran "
                                 f"failed (the last: {self.ran['last']}; each trial's error is in trials.csv)")


def error_line(message: str | None) -> str | None:
    r"""The exception line of a failed trial's message (KerasTuner keeps the whole traceback).

    Example:
        >>> error_line("Traceback (most recent call last):\n  ...\nRuntimeError: cannot be reused\n")
        'RuntimeError: cannot be reused'
    """
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def progress_line(tuner: kt.Tuner, trial, histories: list, record: dict) -> str:
    """One line about a finished trial: who ran it, its settings, best objective, time, cache."""
    objective = tuner.oracle.objective
    best = max if objective.direction == "max" else min
    scores = [best(h.history[objective.name]) for h in histories if objective.name in h.history]
    score = f"{sum(scores) / len(scores):.4f}" if scores else "n/a"
    return (
        f"[{tuner.tuner_id}] trial {trial.trial_id}: {describe(tuner.hypermodel.chosen(trial.hyperparameters.values))}"
        f" -> {objective.name}={score} ({record['seconds']:.1f} s, features: {record['cache']})"
    )


class DiskFull(kt.errors.FatalError, OSError):
    """A full disk during a trial: an `OSError` (ENOSPC) that stops the search (KerasTuner retries other errors)."""


def _write_json(path: pathlib.Path, data) -> None:
    write_text(path, json.dumps(data, indent=2))


def make_tuner(
    hypermodel: TransferHyperModel,
    *,
    tuner: str = "random",
    objective: str = "val_accuracy",
    max_trials: int = 10,
    max_epochs: int = 10,
    directory: str | os.PathLike = "runs/tune",
    project_name: str = "search",
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
    **kwargs,
) -> kt.Tuner:
    """One of KerasTuner's tuners around `hypermodel`, checked before anything trains.

    Args:
        hypermodel: the search space.
        tuner: "random", "bayesian", "hyperband" or "grid".
        objective: a metric the model reports, e.g. "val_accuracy" (maximised)
            or "val_loss" (minimised).
        max_trials: the most trials (Hyperband: a cap on top of its brackets).
        max_epochs: Hyperband's largest epoch budget per trial (other tuners
            take `epochs` in `search`).
        directory, project_name: where KerasTuner keeps the search; an
            existing search there is resumed unless `overwrite`.
        seed: the oracle's seed.
        progress: print one line per finished trial.
        **kwargs: passed to the tuner class.

    Example:
        >>> hm = TransferHyperModel(keras_team.zoo.seed_cnn((8, 8, 1), 5), 5, cuts=["fc1"])
        >>> make_tuner(hm, tuner="annealing")
        Traceback (most recent call last):
        ...
        keras_team.errors.KerasTeamError: tuner='annealing' is not valid: expected one of random, bayesian, hyperband, grid
    """
    if tuner not in TUNERS:
        raise KerasTeamError("tuner", tuner, f"one of {', '.join(TUNERS)}")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise KerasTeamError("max_trials", max_trials, "an int >= 1")
    name = objective.name if isinstance(objective, kt.Objective) else objective
    if name not in hypermodel.reported_metrics():
        raise KerasTeamError("objective", name, f"a metric the model reports: {', '.join(hypermodel.reported_metrics())}")
    direction = "min" if name.endswith("loss") else "max"
    # KerasTuner's oracle reads a seed of 0 as "no seed" (`seed or random.randint(...)`): shift by one.
    common = dict(objective=kt.Objective(name, direction), directory=str(directory),
                  project_name=project_name, overwrite=overwrite, seed=seed + 1, **kwargs)
    cls = type(f"Recorded{TUNERS[tuner].__name__}", (_RecordsTrials, WholeState, TUNERS[tuner]), {"progress": progress})
    if tuner == "hyperband":
        built = cls(hypermodel, max_epochs=max_epochs, **common)
        built.oracle.max_trials = max_trials
        return built
    return cls(hypermodel, max_trials=max_trials, **common)


def cap_per_class(x: np.ndarray, y: np.ndarray, per_class: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """At most `per_class` examples of each class (seeded sample, original order kept).

    Few-shot users rarely have more validation than training examples; the
    cap keeps the search honest about how much data chose it.

    Example:
        >>> x, y = np.arange(10), np.array([0] * 6 + [1] * 4)
        >>> cap_per_class(x, y, 3)[1].tolist()
        [0, 0, 0, 1, 1, 1]
    """
    if per_class is None:
        return x, y
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise KerasTeamError("validation_per_class", per_class, "an int >= 1, or None for no cap")
    rng = np.random.default_rng(seed)
    keep = [
        np.sort(rng.choice(members, min(per_class, len(members)), replace=False))
        for members in (np.flatnonzero(y == label) for label in np.unique(y))
    ]
    index = np.sort(np.concatenate(keep))
    return x[index], y[index]


def trial_table(tuner: kt.Tuner) -> list[dict]:
    """One row per trial: its settings by the recipe's names, status, score, seconds, cache use and error.

    Example:
        >>> rows = trial_table(tuner)
        >>> [row["status"] for row in rows], list(rows[0])[:4]
        (['COMPLETED', 'COMPLETED'], ['trial', 'status', 'cut', 'depth'])
    """
    hypermodel = tuner.hypermodel
    depth = {c.name: c.depth for c in hypermodel.cuts}
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        values = trial.hyperparameters.values
        chosen = hypermodel.chosen(values)
        record_path = pathlib.Path(tuner.get_trial_dir(trial_id)) / TRIAL_RECORD
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        rows.append({
            "trial": trial_id,
            "status": trial.status,
            **chosen,
            "depth": depth[chosen["cut"]],
            "epochs": values.get("tuner/epochs"),
            "score": trial.score,
            "seconds": record.get("seconds"),
            "cache": record.get("cache"),
            "tuner_id": record.get("tuner_id"),
            "error": error_line(trial.message) if trial.status != "COMPLETED" else None,
        })
    return [{column: row.get(column) for column in COLUMNS} for row in rows]


def best_settings(tuner: kt.Tuner) -> dict:
    """The best trial's resolved settings (cut, head, rates, unfreeze).

    Example:
        >>> best_settings(tuner)["cut"] == tuner.get_best_hyperparameters()[0].get("cut")
        True
    """
    best = tuner.oracle.get_best_trials(1)
    if not best:
        raise KerasTeamError("search", str(tuner.project_dir), "a search with at least one completed trial")
    return tuner.hypermodel.chosen(best[0].hyperparameters.values)


def write_results(tuner: kt.Tuner, output_dir: str | os.PathLike, *, extra: dict | None = None) -> pathlib.Path:
    """Write `trials.csv`, `trials.json` (rows plus `extra`) and `score_by_cut.png` to `output_dir`.

    Example:
        >>> out = write_results(tuner, tmp, extra={"validation_examples": 50})
        >>> json.loads((out / "trials.json").read_text())["validation_examples"]
        50
    """
    out = pathlib.Path(output_dir)
    rows = trial_table(tuner)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "trials.csv", text.getvalue())
    objective = tuner.oracle.objective
    _write_json(out / "trials.json", {"objective": objective.name, "direction": objective.direction,
                                       **(extra or {}), "trials": rows})
    plot_by_cut(rows, [c.name for c in tuner.hypermodel.cuts], objective.name, out / "score_by_cut.png",
                direction=objective.direction)
    return out


def plot_by_cut(
    rows: list[dict], cut_order: list[str], metric: str, path: pathlib.Path, *, direction: str = "max"
) -> None:
    """Scatter of each trial's score against its cut (cuts in leader order), best per cut joined.

    Example:
        >>> plot_by_cut([{"cut": "fc1", "score": 0.9}], ["pool2", "fc1"], "val_accuracy",
        ...             pathlib.Path(tmp) / "plot.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r["score"] is not None]
    position = {name: i for i, name in enumerate(cut_order)}
    figure, axes = plt.subplots(figsize=(max(4.0, 0.7 * len(cut_order) + 2), 3.5))
    axes.scatter([position[r["cut"]] for r in scored], [r["score"] for r in scored], alpha=0.6, label="trial")
    better = max if direction == "max" else min
    best = {}
    for r in scored:
        best[r["cut"]] = better(best.get(r["cut"], r["score"]), r["score"])
    tried = sorted(best, key=position.get)
    if tried:
        axes.plot([position[c] for c in tried], [best[c] for c in tried], "o-", color="C1", label="best per cut")
    axes.set_xticks(range(len(cut_order)), cut_order, rotation=45, ha="right")
    axes.set_xlabel("cut (leader order)")
    axes.set_ylabel(metric)
    axes.legend(loc="lower left")
    figure.tight_layout()
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(figure)
