"""The README's promises: the write-up's recipe (in getting-started) runs, its commands are what CI runs."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GETTING_STARTED = (ROOT / "docs" / "getting-started.md").read_text()


@pytest.mark.large
def test_readme_recipe_runs_and_trains_every_member(capsys):
    code = re.search(r"## The same recipe in a dozen lines.*?```python\n(.*?)```", GETTING_STARTED, re.S).group(1)
    namespace = {}
    exec(compile(code, "getting-started.md", "exec"), namespace)
    scores = namespace["team"].evaluate(namespace["target"].dataset("test"), return_dict=True, verbose=0)
    assert scores["leader_accuracy"] > 0.4 and scores["mlp_accuracy"] > 0.4  # 5 classes: chance is 0.2
    assert [layer.name for layer in namespace["student"].body.layers if layer.weights] == [
        "conv1", "conv2", "fc1"
    ]


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert commands[0].endswith("keras-team run")
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
