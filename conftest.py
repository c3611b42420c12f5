"""The `large` marker, and the names every docstring example may use.

`pytest` runs the fast set; `pytest -m large` runs only the tests marked
`large` (end-to-end runs, several processes, tuner searches, export round
trips); `pytest --large` runs both (keras-hub's convention).

Docstring examples see `keras`, `keras_team`, `np` (seeded per example) and
the small objects of `tests/doctest_names.py` (a tiny trained `leader`,
`team`, data `x`, `y`, a scratch directory `tmp`, ...). After each example
the Keras session is cleared, so the layer names it took (``relu``,
``dense``, ...) are free again for the tests that follow.
"""

import keras
import pytest


def pytest_addoption(parser):
    parser.addoption("--large", action="store_true", help="also run the tests marked large (slow end to end)")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: slow end-to-end test, deselected unless `-m large` or `--large`")


def pytest_collection_modifyitems(config, items):
    """Plain `pytest` deselects the large tests (they are not skipped work: `pytest -m large` runs them)."""
    if config.getoption("--large") or config.getoption("-m"):
        return
    large = [item for item in items if "large" in item.keywords]
    if large:
        config.hook.pytest_deselected(items=large)
        items[:] = [item for item in items if "large" not in item.keywords]


@pytest.fixture(autouse=True)
def _doctest_names(request):
    if request.node.__class__.__name__ != "DoctestItem":
        yield
        return
    from tests.doctest_names import mocked_tfds, names

    tmp = request.getfixturevalue("tmp_path")
    source = "".join(example.source for example in request.node.dtest.examples)
    request.getfixturevalue("doctest_namespace").update(names(tmp, source))
    with mocked_tfds(source, tmp):
        yield
    keras.backend.clear_session(free_memory=False)  # a gc pass costs ~1 s once the tests hold many models
