"""The plan's builders (keras_team.app.recipe): core errors become config paths, our own bugs stay bugs."""

import keras
import pytest

from keras_team import data
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


class _Holder(keras.layers.Layer):  # holds an object get_config cannot serialise: the layer cannot be copied
    def __init__(self, thing=None, **kwargs):
        super().__init__(**kwargs)
        self.thing = thing

    def call(self, x):
        return x


def test_a_given_leader_that_cannot_be_copied_is_blamed_on_its_path_not_on_the_head(tmp_path):
    path = tmp_path / "leader.keras"
    path.write_bytes(b"")  # the config only checks that the file exists; the model is given below
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(4, name="kept")(_Holder(object(), name="held")(keras.layers.Flatten()(inputs)))
    leader = keras.Model(inputs, keras.layers.Dense(5, name="logits")(hidden))
    config = load_config(overrides=[f"leader.path={path}", "transfer.keep=kept"])
    target = data.digits(classes=[5, 6], shots=2)
    with pytest.raises(KerasTeamError) as error:
        recipe.build_student(config, 0, leader, target)
    assert error.value.field == "leader.path" and "rebuilt from their configs" in str(error.value)


def test_a_head_that_does_not_take_the_features_at_the_cut_is_blamed_on_its_kind():
    with pytest.raises(KerasTeamError) as error:
        recipe.make_plan(load_config(overrides=[*FAST, "transfer.head.kind=conv"]))  # a flat cut: no conv head
    assert error.value.field == "transfer.head.kind"


@pytest.mark.large
def test_a_given_leader_taking_other_images_gets_them_fitted_inside_the_model_and_check_says_so(tmp_path):
    from keras_team import zoo

    path = tmp_path / "rgb.keras"
    saved = zoo.seed_cnn((16, 16, 3), 5, name="rgb_leader")
    saved.save(path)
    plan = recipe.make_plan(load_config(overrides=[f"leader.path={path}", "transfer.keep=3"]))
    leader = plan.leaders["leader"]
    assert leader.input_shape == (None, 8, 8, 1)  # the digits, as they are
    assert "input   resized (8, 8, 1) -> (16, 16, 3) (bilinear), grey -> RGB, inside the model" in plan.describe()
    images = keras.ops.convert_to_numpy(keras.layers.Resizing(16, 16)(keras.ops.repeat(
        keras.ops.cast(plan.target.splits["test"][0][:4], "float32"), 3, axis=-1)))
    assert abs(leader.predict(plan.target.splits["test"][0][:4], verbose=0) - saved.predict(images, verbose=0)).max() < 1e-4
    assert plan.cuts["leader"].name == "fc1"  # the leader's own layers, counted as before


def test_a_given_leader_that_takes_no_images_is_refused_on_its_path(tmp_path):
    path = tmp_path / "flat.keras"
    keras.Sequential([keras.Input((64,)), keras.layers.Dense(5)]).save(path)
    with pytest.raises(KerasTeamError) as error:
        recipe.load_leader(str(path), data.digits(classes=[0, 1], shots=2))
    assert error.value.field == "leader.path" and "(8, 8, 1)" in error.value.allowed


@pytest.mark.large
def test_a_multi_scale_follower_reads_cuts_of_the_body_from_the_config_and_a_wrong_one_lists_them():
    plan = recipe.make_plan(load_config(overrides=[*FAST, "followers.0.tap=[pool1, pool2]"]))
    assert plan.team.follower_graphs["mlp"].get_layer("join_taps").output.shape == (None, 6 + 16)
    with pytest.raises(KerasTeamError) as error:
        recipe.make_plan(load_config(overrides=[*FAST, "followers.0.tap=[pool1, block9]"]))
    assert error.value.field == "followers[0].tap" and error.value.value == "block9"
    assert "a cut of its body: rescale, conv1, pool1, conv2, pool2, flatten, fc1" in error.value.allowed
