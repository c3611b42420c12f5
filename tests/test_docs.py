"""Every code block of the README and of docs/ runs, so a page can never go stale.

A page's ```python blocks run in order in one namespace, and the lines of
its ```bash blocks that are commands of the package (`keras-team ...`, or
`python examples/...`) run in a shell between them, in page order, all in
one scratch directory that holds `my_images/` (a tiny folder of class
subfolders of PNGs, the "your own images" of the pages). A block that must
not run (an install, a server, a cluster of machines) is preceded by
`<!-- no-test: reason -->`, and the reason is required.

Two things differ from what a reader runs, both because the tests must be
offline and quick: ImageNet weights are replaced by random ones (nothing
downloads in a test) and every `keras-team run` gets one-epoch stages
(`TINY_RUN`).
"""

import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
USER_PAGES = [*PAGES, ROOT / "CHANGELOG.md", ROOT / "examples" / "README.md"]

BLOCK = re.compile(r"(?:<!--\s*no-test:(?P<reason>[^>]*?)-->\s*\n)?```(?P<lang>[\w-]*)\n(?P<code>.*?)```", re.S)
NO_TEST = re.compile(r"<!--\s*no-test\b(?P<rest>[^>]*)-->")
RUNNABLE = ("python", "bash", "sh")
OFFLINE = {'weights="imagenet"': "weights=None", "leader.weights=imagenet": "leader.weights=null"}
TINY_RUN = ("--set leader.epochs=1 --set transfer.epochs=1 --set transfer.fine_tune_epochs=1 "
            "--set baseline.epochs=1")
# Pages whose runs keep every epoch: a quantized LiteRT file is held to a fraction of the logits' range,
# which a one-epoch team's logits do not span (its tflite-dynamic file misses where the default run's passes).
WHOLE_RUNS = {"export-and-serving.md"}


def blocks(page: pathlib.Path) -> list[dict]:
    """The fenced blocks of a page: language, code, and the no-test reason (None when the block runs)."""
    return [{"lang": m["lang"], "code": m["code"], "reason": m["reason"]}
            for m in BLOCK.finditer(page.read_text())]


def commands(code: str) -> list[str]:
    """The package's commands in a bash block: continuation lines joined, comments dropped."""
    joined = code.replace("\\\n", " ")
    lines = [line.split("  #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line.startswith(("keras-team ", "python examples/"))]


def offline(code: str) -> str:
    for online, local in OFFLINE.items():
        code = code.replace(online, local)
    return code


def make_images(root: pathlib.Path, classes=("cat", "dog", "fox"), per_class: int = 20, size: int = 32) -> None:
    """A folder of class subfolders of small RGB PNGs (70% train, 30% test), each class a colour to learn."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3)).astype("uint8")
            pixels[..., c % 3] += 150
            Image.fromarray(pixels).save(folder / f"{i}.png")


def run_command(command: str, cwd: pathlib.Path, *, tiny: bool = True) -> None:
    command = offline(command)
    if tiny and (command.startswith("keras-team run") or command.startswith("keras-team tune")):
        command = f"{command} {TINY_RUN}"
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    else:
        argv = [str(pathlib.Path(sys.executable).with_name(argv[0])), *argv[1:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def run_page(page: pathlib.Path, cwd: pathlib.Path) -> None:
    namespace = {"__name__": f"docs_{page.stem}"}
    for index, block in enumerate(blocks(page)):
        if block["reason"] is not None or block["lang"] not in RUNNABLE:
            continue
        start = time.perf_counter()
        if block["lang"] == "python":
            code = compile(offline(block["code"]), f"{page.name} block {index}", "exec")
            exec(code, namespace)  # noqa: S102 - the page's own code
        else:
            for command in commands(block["code"]):
                run_command(command, cwd, tiny=page.name not in WHOLE_RUNS)
        print(f"{page.name} block {index} ({block['lang']}): {time.perf_counter() - start:.1f} s")


def test_every_runnable_block_runs_or_says_why_not():
    for page in PAGES:
        for block in blocks(page):
            if block["lang"] in ("bash", "sh") and block["reason"] is None:
                assert commands(block["code"]), f"{page.name}: a shell block with no keras-team command " \
                    f"must be marked <!-- no-test: reason -->:\n{block['code']}"
        for marker in NO_TEST.finditer(page.read_text()):
            reason = marker["rest"].lstrip(":").strip()
            assert marker["rest"].startswith(":") and reason, f"{page.name}: a no-test marker without a reason"


def test_user_pages_tell_no_history():
    history = re.compile(r"\bissue \d+|\bissues? #\d+|\brounds? ago|\bearlier round|\bthis round\b", re.I)
    for page in USER_PAGES:
        if page.exists():
            found = history.search(page.read_text())
            assert not found, f"{page.name} mentions the project's history: {found.group(0)!r}"


def test_readme_is_short_and_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to a missing {target}"


def _runnable(page: pathlib.Path) -> bool:
    return any(block["reason"] is None and block["lang"] in RUNNABLE for block in blocks(page))


@pytest.mark.large
@pytest.mark.parametrize("page", [page for page in PAGES if _runnable(page)],
                         ids=[str(page.relative_to(ROOT)) for page in PAGES if _runnable(page)])
def test_page_runs(page, tmp_path, monkeypatch):
    make_images(tmp_path / "my_images")
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    try:
        run_page(page, tmp_path)
    finally:
        import keras

        keras.backend.clear_session(free_memory=False)
    print(f"{page.name}: {time.perf_counter() - start:.1f} s")
