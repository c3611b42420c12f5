"""The application on top of the library: config, workspace, recipe, report, CLI.

`keras_team` (the library) never imports from here; `keras-team run` does.

Example:
    >>> from keras_team.app.config import load_config
    >>> load_config(overrides=["seed=1"]).seed
    1
"""
