"""`keras-team predict`: a finished run's team names the classes of new images or arrays.

Example:
    $ keras-team predict runs/pets photo.jpg more_photos/ --top 2
    $ keras-team predict runs/pets new.npz --member mlp --json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys

from keras_team.predictions import Prediction, predict


def format_predictions(predictions: list[Prediction]) -> str:
    """One line per input: its classes, most probable first, with their probabilities.

    Example:
        >>> print(format_predictions([Prediction("a.png", ("cat", "dog"), (0.875, 0.125)),
        ...                           Prediction("bb.png", ("dog", "cat"), (0.5, 0.5))]))
        a.png   cat 0.875  dog 0.125
        bb.png  dog 0.500  cat 0.500
    """
    width = max((len(p.input) for p in predictions), default=0)
    return "\n".join(f"{p.input:<{width}}  " + "  ".join(f"{name} {probability:.3f}"
                                                         for name, probability in zip(p.classes, p.probabilities))
                     for p in predictions)


def handle(args: argparse.Namespace) -> None:
    """Run `keras-team predict` (errors are `KerasTeamError`s, printed by the caller).

    Many inputs show a progress bar on stderr, so stdout holds only the answers (e.g. `--json > answers.json`).
    """
    with contextlib.redirect_stdout(sys.stderr):
        predictions = predict(args.run_dir, args.inputs, member=args.member, top=args.top, progress=not args.quiet)
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in predictions], indent=2))
    else:
        print(format_predictions(predictions))
