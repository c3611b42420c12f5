"""Tests of keras_team.app.config: defaults, merging, overrides, and every user error."""

import json
import pathlib

import pydantic
import pytest
import yaml

from keras_team.app import cli
from keras_team.app.config import (
    Config,
    DistillConfig,
    Positive,
    Section,
    default_config_text,
    json_schema_text,
    load_config,
)
from keras_team.errors import KerasTeamError


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args, **kwargs) -> KerasTeamError:
    with pytest.raises(KerasTeamError) as info:
        load_config(*args, **kwargs)
    return info.value


def assert_error(error: KerasTeamError, field: str, *in_message: str):
    assert error.field == field, str(error)
    message = str(error)
    assert message.startswith(f"{field}=")
    assert repr(error.value) in message
    assert f"expected {error.allowed}" in message
    for text in in_message:
        assert text in message, message


# --- defaults ----------------------------------------------------------------


def test_defaults_are_the_run_the_readme_describes():
    """`keras-team run` with no config: a ResNet leader on digits 0-4 cut after pool1, a linear-probe head, an
    MLP and two linear-probe followers on the cut's features (its map flattened, and pooled) learn 5-9 from 5
    images per class, next to a scratch baseline."""
    config = load_config()
    assert (config.data.source.classes, config.data.source.shots) == ((0, 1, 2, 3, 4), None)
    assert (config.data.target.classes, config.data.target.shots) == ((5, 6, 7, 8, 9), 5)
    assert (config.leader.path, config.leader.architecture, config.transfer.keep) == (None, "residual_cnn", None)
    assert config.transfer.head.kind == "linear_probe"
    assert [(f.name, f.kind, f.tap, f.pool, f.distill) for f in config.followers] == [
        ("mlp", "mlp", "features", "flatten", None), ("probe", "linear_probe", "features", "flatten", None),
        ("pooled", "linear_probe", "features", "mean_std", None)]
    assert config.baseline.epochs > 0 and config.team.epochs == 0  # the baseline is trained; joint fine-tuning is off
    assert config.output_dir == "runs/digits" and config.overwrite is False


def test_default_text_comments_every_field():
    text = default_config_text()
    fields = [line for line in text.splitlines() if ":" in line and not line.lstrip().startswith("#")]
    assert len(fields) > 40
    for line in fields:
        assert "#" in line, f"no comment on: {line}"
    assert yaml.safe_load(text) == load_config().to_dict()


def sections(model=Config):
    """Every section class reachable from `model`, `model` included."""
    found = {model}
    for field in model.model_fields.values():
        for kind in _types_in(field.annotation):
            if isinstance(kind, type) and issubclass(kind, Section) and kind not in found:
                found |= sections(kind)
    return found


def _types_in(annotation):
    yield annotation
    for arg in getattr(annotation, "__args__", ()) + tuple(getattr(annotation, "__metadata__", ())):
        yield from _types_in(arg)


def test_every_field_has_a_description_shown_by_init():
    text = default_config_text()
    found = sections()
    assert {c.__name__ for c in found} >= {"DataConfig", "TaskConfig", "HeadConfig", "DistillConfig", "FollowerConfig"}
    for section in found:
        for name, field in section.model_fields.items():
            assert field.description, f"{section.__name__}.{name} has no description"
            if section.__name__ not in ("DistillConfig", "TeamLeaderConfig"):  # null or [] by default: not shown
                assert f"{name}: " in text and field.description in text, f"{section.__name__}.{name}"


def test_default_text_says_what_each_field_accepts():
    lines = default_config_text().splitlines()
    assert "seed: 0                  # random seed for weights, shuffling and sampling; an int >= 0" in lines
    assert any(line.strip().startswith("learning_rate: 0.001") and line.endswith("a finite number > 0") for line in lines)
    assert any(line.strip().startswith("augment: []") and line.endswith("a list of distinct items from flip, crop")
               for line in lines)


def test_published_json_schema_is_up_to_date():
    path = pathlib.Path(__file__).resolve().parents[1] / "keras_team" / "app" / "config.schema.json"
    assert path.read_text() == json_schema_text(), "regenerate it: keras-team schema > keras_team/app/config.schema.json"


def test_editors_schema_agrees_with_the_config_reader():
    import jsonschema  # an independent reader of the published schema

    validator = jsonschema.Draft202012Validator(json.loads(json_schema_text()))
    assert not list(validator.iter_errors(yaml.safe_load(default_config_text())))
    two_leaders = {"leaders": [{"name": "a"}, {"name": "b", "transfer": {"keep": 3}}],
                   "followers": [{"name": "m", "leaders": ["a", "b"], "combine": "each"}]}
    assert not list(validator.iter_errors(two_leaders))
    load_config(overrides=[f"{key}={json.dumps(value)}" for key, value in two_leaders.items()])
    for wrong in ({"seed": -1}, {"sead": 1}, {"data": {"validation": 1}}, {"transfer": {"head": {"kind": "lstm"}}},
                  {"data": {"target": {"classes": [5, 5]}}}, {"followers": [{"combine": "sum"}]}):
        assert list(validator.iter_errors(wrong)), wrong
        with pytest.raises(KerasTeamError):
            Config.from_dict(wrong)


def test_schema_command_prints_the_json_schema(capsys):
    assert cli.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["transfer"]["default"] == load_config().to_dict()["transfer"]
    assert schema["$defs"]["DataConfig"]["properties"]["source"]["default"]["classes"] == [0, 1, 2, 3, 4]
    leader = schema["$defs"]["LeaderConfig"]["properties"]
    assert leader["architecture"]["enum"] == ["seed_cnn", "residual_cnn"] and leader["epochs"]["minimum"] == 1


def test_a_new_section_is_a_few_declarations():
    class TuneConfig(Section):
        trials: Positive = pydantic.Field(10, description="models to try")

    class TunedConfig(Config):
        tune: TuneConfig = pydantic.Field(default_factory=TuneConfig, description="the search")

    assert TunedConfig.from_dict({}).tune.trials == 10
    assert TunedConfig.from_dict({"tune": {"trials": 3}, "seed": 2}).tune.trials == 3
    with pytest.raises(KerasTeamError) as info:
        TunedConfig.from_dict({"tune": {"trials": 0}})
    assert_error(info.value, "tune.trials", "an int >= 1")
    with pytest.raises(KerasTeamError) as info:
        TunedConfig.from_dict({"tune": {"trails": 3}})
    assert_error(info.value, "tune.trails", "did you mean 'trials'")


# --- merging and overrides -----------------------------------------------------


def test_partial_file_merges_over_defaults(tmp_path):
    path = write(tmp_path, "seed: 4\ndata:\n  target: {shots: 1}\ntransfer:\n  head: {dropout: 0.5}\n")
    config = load_config(path)
    assert config.seed == 4
    assert config.data.target.shots == 1
    assert config.data.target.classes == (5, 6, 7, 8, 9)  # kept from defaults
    assert config.transfer.head.dropout == 0.5 and config.transfer.head.hidden == (64,)


def test_empty_file_is_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing\n")) == load_config()


def test_listed_followers_take_omitted_fields_from_default_follower(tmp_path):
    path = write(tmp_path, "followers:\n  - {name: a, tap: logits}\n  - {name: b, tap: probs, temperature: 4}\n")
    a, b = load_config(path).followers
    assert (a.name, a.tap, a.hidden, a.epochs) == ("a", "logits", (50,), 100)
    assert (b.tap, b.temperature) == ("probs", 4.0)


def test_followers_may_be_empty(tmp_path):
    assert load_config(write(tmp_path, "followers: []\n")).followers == ()


def test_overrides_of_scalars():
    config = load_config(overrides=["transfer.keep=fc1", "data.validation=0.25", "overwrite=true"])
    assert config.transfer.keep == "fc1"
    assert config.data.validation == 0.25 and config.overwrite is True
    assert load_config(overrides=["transfer.keep=3"]).transfer.keep == 3


def test_override_scientific_float():
    assert load_config(overrides=["transfer.learning_rate=1e-4"]).transfer.learning_rate == 1e-4


def test_overrides_of_lists_and_list_indexes():
    config = load_config(
        overrides=["data.target.classes=[5,6]", "followers.0.epochs=5", "followers[0].hidden=[8, 4]"]
    )
    assert config.data.target.classes == (5, 6)
    assert config.followers[0].epochs == 5 and config.followers[0].hidden == (8, 4)


def test_override_applies_after_file(tmp_path):
    path = write(tmp_path, "seed: 4\n")
    assert load_config(path, overrides=["seed=9"]).seed == 9


def test_override_inside_null_distill():
    config = load_config(overrides=["followers.0.distill={temperature: 2, student_loss_weight: 0.5}"])
    assert config.followers[0].distill == DistillConfig(temperature=2.0, student_loss_weight=0.5)


def test_to_yaml_round_trips(tmp_path):
    config = load_config(
        overrides=[
            "transfer.keep=fc1", "data.augment=[flip, crop]", "data.data_dir=/tmp/tfds",
            "followers.0.distill={temperature: 3, student_loss_weight: 0.3}", "transfer.learning_rate=1e-5",
        ]
    )
    path = write(tmp_path, config.to_yaml(), "resolved.yaml")
    assert load_config(path) == config
    assert Config.from_dict(config.to_dict()) == config


def test_existing_leader_path(tmp_path):
    leader = tmp_path / "leader.keras"
    leader.write_bytes(b"")
    assert load_config(overrides=[f"leader.path={leader}"]).leader.path == str(leader)


# --- errors: files -------------------------------------------------------------


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_error(error_of(missing), "config", "readable YAML file")


def test_unreadable_config_file_is_a_directory(tmp_path):
    assert_error(error_of(tmp_path), "config", "readable YAML file")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "seed: 1\ndata:\n  batch_size: [1, 2\n")
    assert_error(error_of(path), "config", "valid YAML", "line ")


def test_yaml_duplicate_key(tmp_path):
    path = write(tmp_path, "seed: 1\nseed: 2\n")
    assert_error(error_of(path), "config", "line 2", "duplicate key 'seed'")


def test_top_level_not_a_mapping(tmp_path):
    path = write(tmp_path, "- seed: 1\n")
    assert_error(error_of(path), "config", "mapping", "seed, output_dir")


# --- errors: keys and types ------------------------------------------------------


def test_unknown_top_level_key_suggests_closest(tmp_path):
    path = write(tmp_path, "sead: 1\n")
    assert_error(error_of(path), "sead", "seed, output_dir", "did you mean 'seed'")


def test_unknown_nested_key_suggests_closest(tmp_path):
    path = write(tmp_path, "transfer:\n  head:\n    dropuot: 0.1\n")
    assert_error(error_of(path), "transfer.head.dropuot", "kind, hidden", "did you mean 'dropout'")


def test_unknown_key_in_follower(tmp_path):
    path = write(tmp_path, "followers:\n  - {name: a, tapp: logits}\n")
    assert_error(error_of(path), "followers[0].tapp", "did you mean 'tap'")


def test_section_not_a_mapping(tmp_path):
    path = write(tmp_path, "data: 5\n")
    assert_error(error_of(path), "data", "a mapping with keys source, target")


def test_wrong_type_int():
    assert_error(error_of(overrides=["data.batch_size='32'"]), "data.batch_size", "'32'", "an int >= 1")


def test_bool_is_not_an_int():
    assert_error(error_of(overrides=["seed=true"]), "seed", "an int >= 0")


def test_wrong_type_bool():
    assert_error(error_of(overrides=["overwrite=maybe"]), "overwrite", "true or false")


def test_float_is_not_an_int():
    assert_error(error_of(overrides=["transfer.epochs=2.0"]), "transfer.epochs", "2.0", "an int >= 1")


def test_blank_string_is_refused():
    assert_error(error_of(overrides=["output_dir=' '"]), "output_dir", "a non-empty string")


def test_wrong_type_list():
    assert_error(error_of(overrides=["transfer.head.hidden=64"]), "transfer.head.hidden", "a list of ints >= 1")


def test_wrong_type_string():
    assert_error(error_of(overrides=["output_dir=[a]"]), "output_dir", "a non-empty string")


# --- errors: ranges and enums ---------------------------------------------------


@pytest.mark.parametrize(
    "override, field, allowed",
    [
        ("seed=-1", "seed", "an int >= 0"),
        ("data.validation=1", "data.validation", "a number in (0, 1)"),
        ("data.batch_size=0", "data.batch_size", "an int >= 1"),
        ("data.source.shots=0", "data.source.shots", "null or an int >= 1"),
        ("leader.epochs=0", "leader.epochs", "an int >= 1"),
        ("transfer.learning_rate=0", "transfer.learning_rate", "a finite number > 0"),
        ("transfer.learning_rate=.nan", "transfer.learning_rate", "a finite number > 0"),
        ("transfer.learning_rate=.inf", "transfer.learning_rate", "a finite number > 0"),
        ("leader.learning_rate=-.inf", "leader.learning_rate", "a finite number > 0"),
        ("transfer.head.dropout=1.0", "transfer.head.dropout", "a number in [0, 1)"),
        ("transfer.fine_tune_epochs=-1", "transfer.fine_tune_epochs", "an int >= 0"),
        ("followers.0.temperature=0", "followers[0].temperature", "a finite number > 0"),
        ("team.epochs=-1", "team.epochs", "an int >= 0"),
        ("baseline.learning_rate=-0.1", "baseline.learning_rate", "a finite number > 0"),
    ],
)
def test_out_of_range_number(override, field, allowed):
    assert_error(error_of(overrides=[override]), field, allowed)


def test_errors_deep_in_a_file_name_the_full_path(tmp_path):
    path = write(tmp_path, "data:\n  target:\n    shots: 0\n")
    assert_error(error_of(path), "data.target.shots", "null or an int >= 1")
    path = write(tmp_path, "followers:\n  - {name: a}\n  - {name: b, distill: {temperature: .inf, student_loss_weight: 0.5}}\n")
    assert_error(error_of(path), "followers[1].distill.temperature", "a finite number > 0")


def test_list_item_out_of_range():
    assert_error(error_of(overrides=["data.target.classes=[5, -1]"]), "data.target.classes[1]", "-1", "an int >= 0")


def test_classes_must_be_distinct():
    assert_error(error_of(overrides=["data.target.classes=[5, 5]"]), "data.target.classes", "distinct ints >= 0")


def test_keep_must_be_positive_int_or_name():
    assert_error(error_of(overrides=["transfer.keep=0"]), "transfer.keep", "an int >= 1 or a non-empty string")


def test_unfreeze_cannot_exceed_keep():
    assert_error(error_of(overrides=["transfer.keep=3", "transfer.unfreeze=4"]), "transfer.unfreeze", "[0, 3]")


@pytest.mark.parametrize(
    "override, field, allowed",
    [
        ("leader.architecture=vgg", "leader.architecture", "one of seed_cnn, residual_cnn"),
        ("transfer.head.kind=lstm", "transfer.head.kind", "one of dense, conv"),
        ("data.augment=[flip, rotate]", "data.augment[1]", "one of flip, crop"),
    ],
)
def test_bad_enum(override, field, allowed):
    assert_error(error_of(overrides=[override]), field, allowed)


def test_leader_path_must_exist_and_end_in_keras(tmp_path):
    weights = tmp_path / "leader.h5"
    weights.write_bytes(b"")
    assert_error(error_of(overrides=[f"leader.path={weights}"]), "leader.path", "null or a path", ".keras")
    missing = tmp_path / "missing.keras"
    assert_error(error_of(overrides=[f"leader.path={missing}"]), "leader.path", "existing file")


def test_follower_name_must_be_identifier():
    assert_error(error_of(overrides=["followers.0.name=2nd-mlp"]), "followers[0].name", "letters, digits and _")


def test_duplicate_follower_names(tmp_path):
    path = write(tmp_path, "followers:\n  - {name: a}\n  - {name: b}\n  - {name: a}\n")
    assert_error(error_of(path), "followers[2].name", "'a'", "not used by another follower")


def test_distill_needs_both_fields():
    error = error_of(overrides=["followers.0.distill.student_loss_weight=0.5"])
    assert_error(error, "followers[0].distill", "temperature")


def test_distill_student_loss_weight_range():
    error = error_of(overrides=["followers.0.distill={temperature: 2, student_loss_weight: 1.5}"])
    assert_error(error, "followers[0].distill.student_loss_weight", "a number in [0, 1]")


def test_from_dict_fills_omitted_fields_from_defaults():
    data = load_config().to_dict()
    del data["team"]["epochs"]
    data["data"] = {"target": {"shots": 2}}
    config = Config.from_dict(data)
    assert config.team.epochs == 0
    assert config.data.target.shots == 2 and config.data.target.classes == (5, 6, 7, 8, 9)
    assert config.data.source.classes == (0, 1, 2, 3, 4)


# --- errors: overrides -----------------------------------------------------------


def test_override_of_a_follower_listed_in_part(tmp_path):
    path = write(tmp_path, "followers:\n  - {name: a}\n")
    follower = load_config(path, overrides=["followers.0.tap=probs"]).followers[0]
    assert (follower.name, follower.tap, follower.epochs) == ("a", "probs", 100)


def test_data_errors_name_the_full_config_path():
    from keras_team.app import recipe

    config = load_config(overrides=["data.target.shots=100000"])
    with pytest.raises(KerasTeamError) as info:
        recipe.load_tasks(config)
    assert info.value.field == "data.target.shots"
    assert str(info.value).startswith("data.target.shots=100000 ")


def test_override_without_equals():
    assert_error(error_of(overrides=["seed"]), "--set", "'seed'", "PATH=VALUE")


def test_override_with_empty_path():
    assert_error(error_of(overrides=["=3"]), "--set", "PATH=VALUE")


def test_override_unknown_path_suggests_closest():
    assert_error(error_of(overrides=["transfer.kep=3"]), "transfer.kep", "keep, head", "did you mean 'keep'")


def test_override_path_below_a_value():
    assert_error(error_of(overrides=["seed.x=3"]), "seed.x", "seed has no subfields")


def test_override_list_index_out_of_range():
    assert_error(error_of(overrides=["followers.3.epochs=5"]), "followers[3]", "an index 0..2")


def test_override_value_bad_yaml():
    assert_error(error_of(overrides=["data.augment=[flip"]), "data.augment", "valid YAML")


# --- several leaders ---------------------------------------------------------------


def test_one_leader_shorthand_is_the_team_leader_named_leader():
    config = load_config()
    assert config.leaders == ()
    (leader,) = config.team_leaders
    assert leader.name == "leader" and leader.architecture == "residual_cnn" and leader.transfer == config.transfer


def test_listed_leaders_take_omitted_fields_from_leader_and_transfer(tmp_path):
    path = write(tmp_path, "leader: {epochs: 3}\ntransfer: {keep: 3, head: {dropout: 0.5}}\nleaders:\n"
                           "  - {name: a}\n  - {name: b, architecture: seed_cnn, transfer: {head: {hidden: [8]}}}\n")
    a, b = load_config(path).team_leaders
    assert (a.name, a.architecture, a.epochs, a.transfer.keep) == ("a", "residual_cnn", 3, 3)
    assert (b.architecture, b.epochs, b.transfer.keep, b.transfer.head.hidden, b.transfer.head.dropout) == (
        "seed_cnn", 3, 3, (8,), 0.5)


def test_followers_name_the_leaders_they_read():
    config = load_config(overrides=["leaders=[{name: a}, {name: b}]", "followers.0.leaders=[b]",
                                    "followers.0.combine=each"])
    assert config.followers[0].leaders == ("b",) and config.followers[0].combine == "each"
    assert load_config().followers[0].leaders is None  # every leader


@pytest.mark.parametrize(
    "overrides, field, in_message",
    [
        (["leaders=[{name: a}, {name: a}]"], "leaders[1].name", "not used by another leader"),
        (["leaders=[{architecture: seed_cnn}]"], "leaders[0]", "also gives name"),
        (["leaders=[{name: a, trnsfer: {keep: 3}}]"], "leaders[0].trnsfer", "did you mean 'transfer'"),
        (["leaders=[{name: a, transfer: {keep: 2, unfreeze: 3}}]"], "leaders[0].transfer.unfreeze", "[0, 2]"),
        (["leaders=[{name: a, epochs: 0}]"], "leaders[0].epochs", "an int >= 1"),
        (["leaders=[{name: a}]", "followers.0.leaders=[a, c]"], "followers[0].leaders[1]", "the name of a leader: a"),
        (["followers.0.leaders=[leader, leader]"], "followers[0].leaders", "distinct names"),
        (["followers.0.leaders=[]"], "followers[0].leaders", "non-empty list"),
        (["followers.0.combine=sum"], "followers[0].combine", "one of concat, each"),
        (["leaders=[{name: mlp}]"], "followers[0].name", "not used by another follower or leader (used: mlp)"),
    ],
)
def test_several_leaders_mistakes(overrides, field, in_message):
    assert_error(error_of(overrides=overrides), field, in_message)


class _TwoReplicas:
    num_replicas_in_sync = 2


@pytest.mark.parametrize("override, field", [
    ("data.batch_size=5", "data.batch_size"),  # raised by the core as its argument `batch_size`
    ("data.target.name=no_such_dataset_xyz", "data.target.name"),  # ... as `name`
])
def test_core_data_errors_are_mapped_to_the_config_path_when_the_tasks_load(override, field, monkeypatch):
    from keras_team.app import recipe

    monkeypatch.setattr(recipe.distribute.tf.distribute, "get_strategy", lambda: _TwoReplicas())
    with pytest.raises(KerasTeamError) as info:
        recipe.load_tasks(load_config(overrides=[override]))
    assert info.value.field == field
