"""Names every docstring example may use: `keras`, `keras_team`, `np` (seeded per example)."""

import keras
import numpy as np
import pytest

import keras_team


@pytest.fixture(autouse=True)
def _doctest_names(request):
    if "doctest_namespace" in request.fixturenames or request.node.__class__.__name__ == "DoctestItem":
        namespace = request.getfixturevalue("doctest_namespace")
        namespace.update(keras=keras, keras_team=keras_team, np=np)
        keras.utils.set_random_seed(0)
