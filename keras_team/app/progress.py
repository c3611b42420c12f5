"""What `keras-team run` prints while it trains: one bar and one line per stage.

Four levels:

- ``"bar"`` (the default on a terminal): a `keras.utils.Progbar` over the
  stage's epochs (the metrics, time left), then one summary line;
- ``"line"`` (the default off a terminal, e.g. in a log file): the summary
  line only;
- ``"verbose"``: Keras' own per-epoch lines, as `model.fit(verbose=2)`;
- ``"quiet"``: nothing; the CLI prints only the final table.

Example:
    >>> out = Output("line")
    >>> out.fit_verbose
    0
    >>> out.summary("transfer", {"seconds": 3.21, "val_accuracy": 0.9})
    transfer      3.2 s  val_accuracy 0.900
"""

from __future__ import annotations

import sys

import keras

LEVELS = ("bar", "line", "verbose", "quiet")


def default_level() -> str:
    """`"bar"` on a terminal, `"line"` otherwise."""
    return "bar" if sys.stdout.isatty() else "line"


class EpochBar(keras.callbacks.Callback):
    """A progress bar over epochs (not batches): the metrics of the last epoch, time left.

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stdout(io.StringIO()) as shown:
        ...     history = model.fit(x, y, epochs=2, verbose=0, callbacks=[EpochBar(2)])
        >>> "2/2" in shown.getvalue() and "loss:" in shown.getvalue()  # the bar, after the last epoch
        True
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs
        self.bar: keras.utils.Progbar | None = None

    def on_epoch_end(self, epoch, logs=None):
        shown = {k: float(v) for k, v in (logs or {}).items() if k == "loss" or k.startswith("val_")}
        if self.bar is None:  # the figures are the epoch's own, not to be averaged over epochs
            self.bar = keras.utils.Progbar(self.epochs, stateful_metrics=list(shown), unit_name="epoch")
        self.bar.update(epoch + 1, values=list(shown.items()), finalize=epoch + 1 >= self.epochs)


class Output:
    """How much a run prints; the recipe asks it for callbacks and lines."""

    def __init__(self, level: str | None = None):
        self.level = level or default_level()
        if self.level not in LEVELS:
            raise ValueError(f"level {self.level!r} is not one of {LEVELS}")

    @property
    def fit_verbose(self) -> int:
        """`verbose` for `model.fit`: 2 (a line per epoch) only at level "verbose"."""
        return 2 if self.level == "verbose" else 0

    def callbacks(self, epochs: int) -> list:
        """The progress callback of one `fit` over `epochs` epochs."""
        return [EpochBar(epochs)] if self.level == "bar" else []

    def say(self, text: str) -> None:
        """A line of news (a stage starting, a warning); silent when quiet."""
        if self.level != "quiet":
            print(text, flush=True)

    def warn(self, text: str) -> None:
        """A warning that something was set aside or lost: one line on stderr, at every level (also quiet)."""
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def stage(self, name: str, description: str) -> None:
        """A stage begins: its name and what it does (bar and verbose levels)."""
        if self.level in ("bar", "verbose"):
            print(f"== {name}: {description}", flush=True)

    def summary(self, name: str, figures: dict) -> None:
        """The one line a finished stage leaves: time and its validation figures."""
        parts = {k: v for k, v in figures.items() if isinstance(v, dict)}  # e.g. one per follower
        if parts:
            seconds = sum(part.get("seconds", 0.0) for part in parts.values())
            scores = "  ".join(f"{name} {part['val_accuracy']:.3f}" for name, part in parts.items() if "val_accuracy" in part)
            scores = f"val_accuracy {scores}" if scores else ""
        else:
            seconds = figures.get("seconds")
            scores = "  ".join(f"{k} {v:.3f}" for k, v in figures.items() if k.startswith("val_") and "loss" not in k)
        self.say(f"{name:<11}{seconds:6.1f} s  {scores}".rstrip() if seconds is not None else f"{name:<11}{scores}")
