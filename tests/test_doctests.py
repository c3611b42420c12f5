"""The docstring examples of keras_team.tuning and keras_team.export run (keras_team's own run
through `--doctest-modules`; these two folders install under other names, so they run here),
with the names of `tests/doctest_names.py`, as in the root conftest."""

import doctest
import importlib
import pkgutil

import keras
import pytest

import keras_team.export
import keras_team.tuning
from tests.doctest_names import names

MODULES = sorted(
    info.name
    for package in (keras_team.tuning, keras_team.export)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
) + ["keras_team.tuning", "keras_team.export"]


# Their examples write SavedModels or convert LiteRT files (export round trips): in the large set.
ROUND_TRIPS = ("keras_team.export", "keras_team.export.litert", "keras_team.export.parity", "keras_team.export.savedmodel",
               "keras_team.export.serving", "keras_team.export.signatures")


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.large) if m in ROUND_TRIPS else m for m in MODULES])
def test_docstring_examples_run(name, tmp_path):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for index, test in enumerate(doctest.DocTestFinder().find(importlib.import_module(name))):
        if test.examples:
            (tmp_path / str(index)).mkdir()
            test.globs.update(names(tmp_path / str(index), "".join(example.source for example in test.examples)))
            runner.run(test)
            keras.backend.clear_session(free_memory=False)  # free the layer names the examples took
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see the output above)"
