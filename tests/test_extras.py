"""A missing optional dependency is one line naming the extra that installs it; the core needs none of them."""

import ast
import importlib.metadata
import pathlib
import sys

import pytest

import keras_team
from keras_team.app import main
from keras_team.extras import MissingExtra

ROOT = pathlib.Path(__file__).parent.parent


def without(monkeypatch, module: str, *reimported: str) -> None:
    """Import `module` fails for this test, and the `reimported` packages (and their submodules) import again."""
    for name in [module, *(name for name in sys.modules if name.startswith(f"{module}."))]:
        monkeypatch.setitem(sys.modules, name, None)
    for name in list(sys.modules):
        if any(name == package or name.startswith(f"{package}.") for package in reimported):
            monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize("module, extra, use", [
    ("keras_tuner", "tune", lambda: keras_team.tuning.make_tuner),
    ("ai_edge_litert", "export", lambda: keras_team.export.tflite),
    ("tensorflow_serving", "export", lambda: keras_team.export.saved_model),
    ("tensorflow_datasets", "tfds", lambda: keras_team.data.tfds_task("cifar10")),
])
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, module, extra, use):
    without(monkeypatch, module, "keras_team.tuning", "keras_team.export")
    with pytest.raises(MissingExtra) as raised:
        use()
    assert str(raised.value) == f'{module} is not installed: pip install "keras-team[{extra}]"'
    assert isinstance(raised.value, ImportError) and isinstance(raised.value, keras_team.KerasTeamError)


def test_the_command_line_without_its_extra_says_which_in_one_line(monkeypatch, capsys):
    without(monkeypatch, "pydantic", "keras_team.app.cli", "keras_team.app.config")
    assert main(["check"]) == 2
    assert capsys.readouterr().err == 'keras-team: error: pydantic is not installed: pip install "keras-team[cli]"\n'


def test_the_core_library_imports_only_its_declared_dependencies():
    """`pip install keras-team` (no extra) is enough for every module of the core library."""
    declared = [r for r in importlib.metadata.requires("keras-team") if "extra ==" not in r]
    modules = {"keras": "keras", "numpy": "numpy", "tensorflow": "tensorflow", "scikit-learn": "sklearn", "pillow": "PIL"}
    assert sorted(requirement.split(">=")[0] for requirement in declared) == sorted(modules)
    allowed = {*modules.values(), "keras_team"}
    for path in sorted((ROOT / "keras_team").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.partition(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, f"{path.name} imports {name}"
                assert not name.startswith(("keras_team.app", "keras_team.tuning", "keras_team.export")), path.name
