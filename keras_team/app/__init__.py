"""The application on top of the library: config, workspace, recipe, report, CLI.

`keras_team` (the library) never imports from here; `keras-team run` does.

Example:
    >>> from keras_team.app.config import load_config
    >>> load_config(overrides=["seed=1"]).seed
    1
"""

import importlib
import sys
from collections.abc import Sequence

from keras_team.extras import missing


def main(argv: Sequence[str] | None = None) -> int:
    """The `keras-team` console script: `keras_team.app.cli.main`, or one line naming a missing extra (status 2)."""
    try:
        return importlib.import_module("keras_team.app.cli").main(argv)
    except ModuleNotFoundError as error:
        extra = missing(error)
        if extra is None:
            raise
        print(f"keras-team: error: {extra}", file=sys.stderr)
        return 2
