"""The plan's builders (keras_team.app.recipe): core errors become config paths, our own bugs stay bugs."""

import pytest

from keras_team.app import recipe
from keras_team.app.config import load_config
from keras_team.errors import KerasTeamError

FAST = ["leader.architecture=seed_cnn", "transfer.keep=3"]


def test_a_follower_named_like_a_layer_of_its_graph_is_named_by_its_config_path():
    config = load_config(overrides=[*FAST, "followers.0.name=probs", "followers.0.tap=probs"])
    with pytest.raises(KerasTeamError) as error:
        recipe.make_plan(config)
    assert error.value.field == "followers[0].name" and error.value.value == "probs"


def test_a_bug_while_building_the_team_is_not_reported_as_a_follower_name_clash(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a bug of ours")

    monkeypatch.setattr(recipe, "Team", broken)
    with pytest.raises(ValueError, match="a bug of ours"):
        recipe.make_plan(load_config(overrides=FAST))
