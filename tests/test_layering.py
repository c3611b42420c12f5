"""The package's layers: the library reads alone, tuning/ and export/ build on it only, the CLI starts light."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "keras_team").glob("*.py"))
TUNING = sorted((ROOT / "tuning").glob("*.py"))
EXPORT = sorted((ROOT / "export").glob("*.py"))


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", LIBRARY + TUNING + EXPORT, ids=lambda p: str(p.relative_to(ROOT)))
def test_libraries_never_import_the_application(path):
    assert not [m for m in imported_modules(path) if m.startswith("keras_team.app")]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_neither_tuning_nor_export(path):
    assert not [m for m in imported_modules(path) if m.startswith(("keras_team.tuning", "keras_team.export"))]


@pytest.mark.parametrize("path", TUNING, ids=lambda p: str(p.relative_to(ROOT)))
def test_tuning_and_export_do_not_import_each_other(path):
    assert not [m for m in imported_modules(path) if m.startswith("keras_team.export")]


def test_no_two_core_modules_import_each_other():
    package = {p.stem: {m.split(".")[1] for m in imported_modules(p) if m.startswith("keras_team.")} for p in LIBRARY}
    circles = [(a, b) for a, uses in package.items() for b in uses if a < b and a in package.get(b, ())]
    assert circles == []


@pytest.mark.parametrize("argv", [["--help"], ["schema"], ["init", "{tmp}/my.yaml"]])
def test_commands_that_need_no_tensorflow_never_start_it(argv, tmp_path):
    code = ("import sys, keras_team_cli\n"
            "try:\n    keras_team_cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *(a.format(tmp=tmp_path) for a in argv)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.stderr.strip().splitlines()[-1] == "False False"
