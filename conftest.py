"""Names every docstring example may use: `keras`, `keras_team`, `np` (seeded per example).

After each example the Keras session is cleared, so the layer names it took
(``relu``, ``dense``, ...) are free again for the tests that follow.
"""

import keras
import numpy as np
import pytest

import keras_team


# The `large` marker (keras-hub's convention), registered minimally here for tests/test_crash.py;
# the tests branch adds the same to this file (the merge keeps one copy).
def pytest_addoption(parser):
    parser.addoption("--large", action="store_true", help="also run the tests marked large (slow end to end)")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: slow end-to-end test, skipped unless `-m large` or `--large`")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--large") or "large" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="large: run with `pytest -m large` or `pytest --large`")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _doctest_names(request):
    is_doctest = request.node.__class__.__name__ == "DoctestItem"
    if is_doctest:
        request.getfixturevalue("doctest_namespace").update(keras=keras, keras_team=keras_team, np=np)
        keras.utils.set_random_seed(0)
    yield
    if is_doctest:
        keras.backend.clear_session()
