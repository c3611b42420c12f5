"""The docstring examples of keras_team.tuning and keras_team.export run (keras_team's own run
through `--doctest-modules`; these two folders install under other names, so they run here)."""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_team
import keras_team.export
import keras_team.tuning

MODULES = sorted(
    info.name
    for package in (keras_team.tuning, keras_team.export)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
) + ["keras_team.tuning", "keras_team.export"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    keras.utils.set_random_seed(0)
    result = doctest.testmod(
        module,
        extraglobs={"keras": keras, "keras_team": keras_team, "np": np},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        report=True,
    )
    keras.backend.clear_session()  # free the layer names the examples took
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see the output above)"
