"""Names every docstring example may use: `keras`, `keras_team`, `np` (seeded per example).

After each example the Keras session is cleared, so the layer names it took
(``relu``, ``dense``, ...) are free again for the tests that follow.
"""

import keras
import numpy as np
import pytest

import keras_team


@pytest.fixture(autouse=True)
def _doctest_names(request):
    is_doctest = request.node.__class__.__name__ == "DoctestItem"
    if is_doctest:
        request.getfixturevalue("doctest_namespace").update(keras=keras, keras_team=keras_team, np=np)
        keras.utils.set_random_seed(0)
    yield
    if is_doctest:
        keras.backend.clear_session()


def pytest_configure(config):
    config.addinivalue_line("markers", "large: end-to-end runs, subprocesses and exports; run after the fast set")
