"""Scores, the results table, `report.json`/`report.md` and the plots of a run.

Example:
    >>> report = evaluate_team(team, target, baseline=baseline)
    >>> print(format_table(report))
    | member...| test accuracy | train time (s) | ensemble weight |
    ...
    | scratch baseline...|...|              - |               - |
    ...
    | team ensemble (...) |...
"""

from __future__ import annotations

import csv
import json
import math
from typing import NamedTuple

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix  # noqa: E402

from keras_team.app.config import Config  # noqa: E402
from keras_team.data import Task  # noqa: E402
from keras_team.export.metadata import package_versions  # noqa: E402
from keras_team.team import Team, Weighting  # noqa: E402
from keras_team.app.config import stage_suffix  # noqa: E402
from keras_team.app.workspace import Workspace  # noqa: E402
from keras_team.files import atomic_path, write_text  # noqa: E402


class EnsembleChoice(NamedTuple):
    """The team's logits on the validation split, its labels, and the weights `Team.ensemble_weights` chose on them."""

    predictions: dict[str, np.ndarray]
    labels: np.ndarray
    weighting: Weighting


def ensemble_choice(team: Team, task: Task) -> EnsembleChoice:
    """Predict the task's validation split once and choose the ensemble weights on it (equal without examples).

    A run's export and its report take the same choice (`evaluate_team(choice=...)`).

    Example:
        >>> choice = ensemble_choice(team, target)
        >>> len(choice.labels) == len(target.labels("validation")), round(sum(choice.weighting.weights.values()), 6)
        (True, 1.0)
    """
    labels = task.labels("validation")
    if len(labels):
        predictions = team.predict(task.dataset("validation"), verbose=0)
    else:
        predictions = {name: np.zeros((0, task.num_classes)) for names in team.member_outputs().values() for name in names}
    return EnsembleChoice(predictions, labels, Team.ensemble_weights(predictions, labels))


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=-1) == labels))


def evaluate_team(team: Team, task: Task, *, split: str = "test", baseline: keras.Model | None = None,
                  choice: EnsembleChoice | None = None) -> dict:
    """Accuracy of every member, of the team ensemble and of a baseline on one split; per class for the ensemble.

    The ensemble weighs the members as `Team.ensemble_weights` chooses on the
    task's validation split (never on `split`, unless `split` is
    "validation"): its weights, rule and validation accuracy are in
    ``report["ensemble"]``, with the equal-weight mean's accuracy beside
    them. The ensemble's per-class accuracy and confusion matrix are keyed
    and ordered by the task's class names. `choice` is an `ensemble_choice`
    already made (a run's export took it): the validation split is then not
    predicted again.

    Example:
        >>> report = evaluate_team(team, target)
        >>> report["members"]["leader"]["test_accuracy"], sum(report["ensemble"]["weights"].values())
        (0..., 1.0)
    """
    # Batch by batch from the task's own pipeline, so a streamed task is never read whole into memory.
    y, predictions = task.labels(split), team.predict(task.dataset(split), verbose=0)
    validation, y_val, weighting = choice or ensemble_choice(team, task)
    key = f"{split}_accuracy"
    ensemble = np.argmax(np.asarray(Team.ensemble(predictions, weighting.weights)), axis=-1)
    confusion = confusion_matrix(y, ensemble, labels=range(task.num_classes))
    report = {
        "task": task.name,
        "split": split,
        "examples": int(len(y)),
        "class_names": list(task.class_names),
        "leaders": list(team.leaders),
        "members": {name: {key: _accuracy(p, y), **({"validation_accuracy": _accuracy(validation[name], y_val)}
                                                    if len(y_val) else {})}
                    for name, p in predictions.items()},
        "ensemble": {
            key: float(np.mean(ensemble == y)),
            f"{split}_accuracy_per_class": {name: float(confusion[i, i] / max(confusion[i].sum(), 1))
                                           for i, name in enumerate(task.class_names)},
            "confusion_matrix": confusion.tolist(),  # rows: true class, columns: predicted, in class_names order
            "weights": weighting.weights,
            "rule": weighting.rule,
            "validation_examples": int(len(y_val)),
            "validation_accuracy": None if math.isnan(weighting.validation_accuracy) else weighting.validation_accuracy,
            f"equal_weights_{key}": _accuracy(np.asarray(Team.ensemble(predictions)), y),
        },
    }
    if baseline is not None:
        report["baseline"] = {key: _accuracy(baseline.predict(task.dataset(split), verbose=0), y)}
    return report


def ensemble_note(report: dict) -> str:
    """How the team ensemble weighed its members, in one line (below the table on screen and in report.md).

    Example:
        >>> print(ensemble_note({"ensemble": {"weights": {"leader": 0.75, "mlp": 0.25}, "rule": "greedy selection",
        ...                                   "validation_examples": 121, "validation_accuracy": 0.9}}))
        team ensemble: weights leader 0.75, mlp 0.25 (greedy selection on 121 validation examples, validation accuracy 0.900)
    """
    ensemble = report["ensemble"]
    if "weights" not in ensemble:
        return "team ensemble: equal weights"
    weights = ", ".join(f"{name} {weight:.2f}" for name, weight in ensemble["weights"].items())
    accuracy = ensemble["validation_accuracy"]
    accuracy = "" if accuracy is None else f", validation accuracy {accuracy:.3f}"
    return f"team ensemble: weights {weights} ({ensemble['rule']} on {ensemble['validation_examples']} validation examples{accuracy})"


PACKAGES = ("keras-team", "keras", "tensorflow", "tensorflow-datasets", "numpy", "scikit-learn")
TIME_NOTE = ("train time: wall-clock seconds of the member's own training on the target task "
             "(leader: transfer + fine-tune; a follower: its tap-caching pass + fit; team ensemble: joint "
             "fine-tuning, - when skipped); the source leader's training is not counted")


def run_record(config: Config, plan) -> dict:
    """What a report must say about the run itself: config, seed, cuts, package versions, warnings.

    Example:
        >>> from keras_team.app.config import load_config
        >>> from keras_team.app.recipe import make_plan
        >>> config = load_config()
        >>> run_record(config, make_plan(config))["cut"]
        {'name': 'pool1', 'depth': 3, 'output_shape': [None, 4, 4, 16]}
    """
    versions = package_versions(PACKAGES)
    cuts = {name: {"name": cut.name, "depth": cut.depth, "output_shape": list(cut.output_shape)}
            for name, cut in plan.cuts.items()}
    return {
        "config": config.to_dict(),
        "seed": config.seed,
        "cut": next(iter(cuts.values())),  # the (first) leader's
        "cuts": cuts,
        "versions": versions,
        "warnings": list(plan.warnings),
    }


def _rows(report: dict) -> list[tuple[str, float, float | None, float | None]]:
    """(label, accuracy, train seconds, ensemble weight) of the baseline, each member and the ensemble."""
    key = f"{report['split']}_accuracy"
    stages = report.get("stages", {})
    leaders = report.get("leaders", ["leader"])

    def transfer_seconds(name: str) -> float | None:
        stage_names = (f"transfer{stage_suffix(name)}", f"fine_tune{stage_suffix(name)}")
        return sum(stages.get(stage, {}).get("seconds", 0.0) for stage in stage_names) or None

    seconds = {
        **{name: transfer_seconds(name) for name in leaders},
        **{name: fig.get("seconds") for name, fig in stages.get("followers", {}).items()},
        **({"team": stages["team"]["seconds"]} if "team" in stages else {}),
    }
    weights = report["ensemble"].get("weights", {})
    rows = []
    if "baseline" in report:
        rows.append(("scratch baseline", report["baseline"][key], stages.get("baseline", {}).get("seconds"), None))
    for name, scores in report["members"].items():
        label = f"{name} (transfer)" if name in leaders else name
        rows.append((label, scores[key], seconds.get(name), weights.get(name)))
    rule = report["ensemble"].get("rule")
    rows.append((f"team ensemble ({rule})" if rule else "team ensemble", report["ensemble"][key], seconds.get("team"),
                 None))
    return rows


def format_table(report: dict) -> str:
    """The results as an aligned text table (also the body of `report.md`).

    With ensemble weights in the report (`evaluate_team`), a last column
    gives each member's weight in the team ensemble and the ensemble's row
    names the rule that chose them.

    Example:
        >>> print(format_table({"split": "test", "members": {"leader": {"test_accuracy": 0.9}},
        ...                     "ensemble": {"test_accuracy": 0.9}}))
        | member            | test accuracy | train time (s) |
        |-------------------|---------------|----------------|
        | leader (transfer) |         0.900 |              - |
        | team ensemble     |         0.900 |              - |
        >>> print(format_table({"split": "test", "members": {"leader": {"test_accuracy": 0.9}, "mlp": {"test_accuracy": 0.4}},
        ...                     "ensemble": {"test_accuracy": 0.9, "weights": {"leader": 1.0, "mlp": 0.0}, "rule": "greedy selection"}}))
        | member                           | test accuracy | train time (s) | ensemble weight |
        |----------------------------------|---------------|----------------|-----------------|
        | leader (transfer)                |         0.900 |              - |            1.00 |
        | mlp                              |         0.400 |              - |            0.00 |
        | team ensemble (greedy selection) |         0.900 |              - |               - |
    """
    weighted = "weights" in report["ensemble"]
    header = ("member", f"{report['split']} accuracy", "train time (s)", *(("ensemble weight",) if weighted else ()))
    body = [(label, f"{acc:.3f}", f"{sec:.1f}" if sec is not None else "-",
             *((f"{weight:.2f}" if weight is not None else "-",) if weighted else ()))
            for label, acc, sec, weight in _rows(report)]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths))
        ) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def _save_figure(figure, path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_accuracy(report: dict, path) -> None:
    """Bar chart: scratch baseline vs transfer vs each follower vs the team."""
    rows = _rows(report)
    figure, axes = plt.subplots(figsize=(1.6 * len(rows) + 2, 4))
    colors = ["#999999" if label == "scratch baseline" else "#1f77b4" for label, *_ in rows]
    colors[-1] = "#d62728"
    bars = axes.bar([label for label, *_ in rows], [acc for _, acc, *_ in rows], color=colors)
    axes.bar_label(bars, fmt="%.3f")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel(f"{report['split']} accuracy")
    axes.set_title(f"{report['task']}: what transfer bought")
    _save_figure(figure, path)


def plot_confusion(report: dict, path) -> None:
    """The team ensemble's confusion matrix, rows and columns named by class."""
    names = report["class_names"]
    figure, axes = plt.subplots(figsize=(0.5 * len(names) + 3, 0.5 * len(names) + 2.5))
    display = ConfusionMatrixDisplay(np.asarray(report["ensemble"]["confusion_matrix"]), display_labels=names)
    display.plot(ax=axes, colorbar=False, xticks_rotation=45 if len(names) > 6 else "horizontal")
    axes.set_title(f"{report['task']}: team ensemble, {report['split']} split")
    _save_figure(figure, path)


def per_class_table(report: dict) -> str:
    """The ensemble's accuracy per class, as a markdown table.

    Example:
        >>> print(per_class_table({"split": "test", "ensemble": {"test_accuracy_per_class": {"cat": 0.5, "dog": 1.0}}}))
        | class | test accuracy (team ensemble) |
        |-------|-------------------------------|
        | cat   |                         0.500 |
        | dog   |                         1.000 |
    """
    scores = report["ensemble"][f"{report['split']}_accuracy_per_class"]
    header = ("class", f"{report['split']} accuracy (team ensemble)")
    body = [(name, f"{value:.3f}") for name, value in scores.items()]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(2)]
    lines = [f"| {a.ljust(widths[0])} | {b.rjust(widths[1])} |" for a, b in [header, *body]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _read_log(path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {}) if key != "epoch"}


def plot_learning_curves(ws: Workspace, path) -> None:
    """One panel per training stage: loss and accuracy, training and validation."""
    logs = sorted(ws.path("logs").glob("*.csv"), key=lambda p: p.stat().st_mtime)  # stage order
    if not logs:
        return
    figure, axes = plt.subplots(2, len(logs), figsize=(3.2 * len(logs), 5.5), squeeze=False)
    for column, log in enumerate(logs):
        history = _read_log(log)
        for row, metric in enumerate(("loss", "accuracy")):
            ax = axes[row][column]
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                if key in history:
                    ax.plot(range(1, len(history[key]) + 1), history[key], style, label=key)
            ax.set_title(f"{log.stem}: {metric}", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            if ax.lines:
                ax.legend(fontsize=7)
    figure.tight_layout()
    _save_figure(figure, path)


def write_report(ws: Workspace, report: dict) -> None:
    """`report.json`, `report.md`, `accuracy.png`, `confusion.png` and `learning_curves.png` in the run directory."""
    write_text(ws.path("report.json"), json.dumps(report, indent=2, sort_keys=True))
    markdown = "\n".join([
        f"# keras-team run: {report['task']}",
        "",
        format_table(report),
        "",
        TIME_NOTE + ".",
        "",
        ensemble_note(report) + ".",
        "",
        *[f"**Warning:** {w}." for w in report.get("warnings", [])],
        "",
        "![accuracy](accuracy.png)",
        "",
        per_class_table(report),
        "",
        "![confusion matrix](confusion.png)",
        "",
        "![learning curves](learning_curves.png)",
        "",
    ])
    write_text(ws.path("report.md"), markdown)
    plot_accuracy(report, ws.path("accuracy.png"))
    plot_confusion(report, ws.path("confusion.png"))
    plot_learning_curves(ws, ws.path("learning_curves.png"))
