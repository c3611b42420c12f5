"""The `keras-team` console script: `--help`, `init`, `schema` and config errors answer before Keras loads.

`import keras_team` registers the package's classes with Keras, which
imports Keras and TensorFlow (seconds). Started here, the package leaves
that to the commands that need Keras (`keras_team.app.cli`), which hide
TensorFlow's start-up lines first.

Example:
    $ keras-team --help
    $ python -m keras_team_cli init my.yaml
"""

import os
import sys
from collections.abc import Sequence

DEFER_REGISTRATION = "_KERAS_TEAM_DEFER_REGISTRATION"  # read by keras_team/__init__.py


def main(argv: Sequence[str] | None = None) -> int:
    """Run `keras-team` with `argv` (default: the command line); the exit status."""
    os.environ[DEFER_REGISTRATION] = "1"
    try:
        from keras_team import app
    finally:
        del os.environ[DEFER_REGISTRATION]  # the package's later imports, and child processes, register as usual
    return app.main(argv)  # keras_team.app.cli, or one line naming a missing extra


if __name__ == "__main__":
    sys.exit(main())
