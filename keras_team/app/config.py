"""The YAML config of a ``keras-team run``, validated before anything starts.

The defaults live in one place, ``default_config.yaml`` next to this module;
the dataclasses below only describe the shape and the rules. This module does
not import TensorFlow or Keras, so the CLI can check a config in milliseconds.

Example:
    >>> from keras_team.app.config import load_config
    >>> config = load_config(overrides=["transfer.keep=fc1", "seed=7"])
    >>> config.transfer.keep, config.seed, config.data.target.shots
    ('fc1', 7, 5)
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from keras_team.errors import KerasTeamError

# ---------------------------------------------------------------------------
# YAML reading: floats like 1e-4 are numbers, a key given twice is an error.


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float and rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str, field: str, value: object) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None) or str(e)
        where = f"line {mark.line + 1}: {problem}" if mark is not None else problem
        context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and start is not None and mark is not None and start.line != mark.line:
            where += f"; {context} on line {start.line + 1}"
        raise KerasTeamError(field, value, f"valid YAML ({where})") from None


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing mappings as blocks and lists of scalars inline."""

    def represent_list(self, data):
        inline = all(not isinstance(v, (dict, list)) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


_Dumper.add_representer(list, _Dumper.represent_list)


# ---------------------------------------------------------------------------
# Rules: ``rule(path, value) -> value`` returns the checked (and normalised)
# value or raises KerasTeamError naming ``path``.

Rule = Callable[[str, Any], Any]


def _fail(allowed: str, accept: Callable[[Any], bool], convert=lambda v: v) -> Rule:
    def rule(path: str, value: Any) -> Any:
        if not accept(value):
            raise KerasTeamError(path, value, allowed)
        return convert(value)

    return rule


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int(low: int) -> Rule:
    return _fail(f"an int >= {low}", lambda v: _is_int(v) and v >= low)


def _number(low: float, high: float = math.inf, *, low_open=True, high_open=True) -> Rule:
    if high == math.inf:
        allowed = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def inside(v: Any) -> bool:
        return (
            _is_number(v)
            and (v > low if low_open else v >= low)
            and (v < high if high_open else v <= high)
        )

    return _fail(allowed, inside, float)


_bool = _fail("true or false", lambda v: isinstance(v, bool))
_null = _fail("null", lambda v: v is None)
_text = _fail("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")
_identifier = _fail(
    "a name of letters, digits and _ not starting with a digit",
    lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) is not None,
)
_keras_file = _fail(
    "a path to an existing file ending in .keras",
    lambda v: isinstance(v, str) and v.endswith(".keras") and os.path.isfile(v),
)


def _one_of(*choices: str) -> Rule:
    return _fail(f"one of {', '.join(choices)}", lambda v: isinstance(v, str) and v in choices)


def _either(*rules: Rule) -> Rule:
    """The first rule that accepts the value; else an error listing them all."""

    def rule(path: str, value: Any) -> Any:
        wanted = []
        for each in rules:
            try:
                return each(path, value)
            except KerasTeamError as e:
                if e.field != path:  # an error inside the value: report it as is
                    raise
                wanted.append(e.allowed)
        raise KerasTeamError(path, value, " or ".join(wanted))

    return rule


def _list(item: Rule, what: str, *, distinct: bool = False, nonempty: bool = False) -> Rule:
    """A list checked item by item (``path[i]``), returned as a tuple."""
    allowed = f"a {'non-empty ' if nonempty else ''}list of {'distinct ' if distinct else ''}{what}"

    def rule(path: str, value: Any) -> tuple:
        if not isinstance(value, list) or (nonempty and not value):
            raise KerasTeamError(path, value, allowed)
        items = tuple(item(f"{path}[{i}]", v) for i, v in enumerate(value))
        if distinct and len(set(items)) != len(items):
            raise KerasTeamError(path, value, allowed)
        return items

    return rule


def _section(cls: type) -> Rule:
    return lambda path, value: _build(cls, value, path)


def _check(rule: Rule) -> Any:
    """A dataclass field without a default (defaults live in the YAML file)."""
    return dataclasses.field(metadata={"rule": rule})


# ---------------------------------------------------------------------------
# The schema.


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """One task's data: a dataset name, a class subset and k-shot sampling."""

    name: str = _check(_text)
    classes: tuple[int, ...] | None = _check(
        _either(_null, _list(_int(0), "ints >= 0", distinct=True, nonempty=True))
    )
    shots: int | None = _check(_either(_null, _int(1)))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Source and target tasks and how they are batched."""

    source: TaskConfig = _check(_section(TaskConfig))
    target: TaskConfig = _check(_section(TaskConfig))
    validation: float = _check(_number(0, 1))
    batch_size: int = _check(_int(1))
    augment: tuple[str, ...] = _check(_list(_one_of("flip", "crop"), "flip, crop", distinct=True))
    data_dir: str | None = _check(_either(_null, _text))
    download: bool = _check(_bool)


@dataclasses.dataclass(frozen=True)
class LeaderConfig:
    """The leader: loaded from ``path`` or trained from ``architecture``."""

    path: str | None = _check(_either(_null, _keras_file))
    architecture: str = _check(_one_of("seed_cnn", "residual_cnn"))
    epochs: int = _check(_int(1))
    learning_rate: float = _check(_number(0))


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """The new task head put on the kept part of the leader."""

    kind: str = _check(_one_of("dense", "conv"))
    hidden: tuple[int, ...] = _check(_list(_int(1), "ints >= 1"))
    dropout: float = _check(_number(0, 1, low_open=False))
    activation: str = _check(_text)


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """Where to cut the leader, the head, and the optional fine-tuning."""

    keep: int | str = _check(_either(_int(1), _text))
    head: HeadConfig = _check(_section(HeadConfig))
    epochs: int = _check(_int(1))
    learning_rate: float = _check(_number(0))
    unfreeze: int = _check(_int(0))
    fine_tune_epochs: int = _check(_int(0))
    fine_tune_learning_rate: float = _check(_number(0))


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Distillation: KL to the leader's probabilities at ``temperature``, weight ``alpha``."""

    temperature: float = _check(_number(0))
    alpha: float = _check(_number(0, 1, low_open=False, high_open=False))


@dataclasses.dataclass(frozen=True)
class FollowerConfig:
    """A follower model reading a tap of the leader."""

    name: str = _check(_identifier)
    tap: str = _check(_text)  # features | logits | probs | a layer name
    temperature: float = _check(_number(0))
    hidden: tuple[int, ...] = _check(_list(_int(1), "ints >= 1"))
    dropout: float = _check(_number(0, 1, low_open=False))
    distill: DistillConfig | None = _check(_either(_null, _section(DistillConfig)))
    epochs: int = _check(_int(1))
    learning_rate: float = _check(_number(0))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Epochs and learning rate of one training stage."""

    epochs: int = _check(_int(1))
    learning_rate: float = _check(_number(0))


@dataclasses.dataclass(frozen=True)
class TeamConfig:
    """Joint fine-tuning of the assembled team (``epochs: 0`` skips it)."""

    epochs: int = _check(_int(0))
    learning_rate: float = _check(_number(0))


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run's config. Build it with :func:`load_config`.

    Example:
        >>> config = load_config()
        >>> config.leader.architecture, config.followers[0].tap
        ('residual_cnn', 'features')
        >>> load_config(overrides=["seed=3"]).to_dict()["seed"]
        3
    """

    seed: int = _check(_int(0))
    output_dir: str = _check(_text)
    overwrite: bool = _check(_bool)
    deterministic: bool = _check(_bool)
    data: DataConfig = _check(_section(DataConfig))
    leader: LeaderConfig = _check(_section(LeaderConfig))
    transfer: TransferConfig = _check(_section(TransferConfig))
    followers: tuple[FollowerConfig, ...] = _check(
        _list(_section(FollowerConfig), "follower mappings")
    )
    baseline: TrainConfig = _check(_section(TrainConfig))
    team: TeamConfig = _check(_section(TeamConfig))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Validate a complete config mapping (every field given).

        Example:
            >>> config = load_config()
            >>> Config.from_dict(config.to_dict()) == config
            True
        """
        return _check_across(_build(cls, data, ""))

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, ready for YAML or JSON.

        Example:
            >>> load_config().to_dict()["data"]["target"]["classes"]
            [5, 6, 7, 8, 9]
        """
        return _plain(self)

    def to_yaml(self) -> str:
        """The resolved config as YAML; ``load_config`` reads it back equal.

        Example:
            >>> print(load_config().to_yaml().splitlines()[0])
            seed: 0
        """
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False)


# ---------------------------------------------------------------------------
# Building dataclasses from mappings.


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _keys_allowed(names: Sequence[str], given: object = None) -> str:
    allowed = f"one of the keys {', '.join(names)}"
    close = difflib.get_close_matches(str(given), names, n=1) if given is not None else []
    return f"{allowed} (did you mean {close[0]!r}?)" if close else allowed


def _build(cls: type, value: Any, path: str) -> Any:
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    if not isinstance(value, Mapping):
        raise KerasTeamError(path or "config", value, f"a mapping with keys {', '.join(names)}")
    for key in value:
        if key not in names:
            raise KerasTeamError(_join(path, str(key)), value[key], _keys_allowed(names, key))
    missing = [n for n in names if n not in value]
    if missing:
        raise KerasTeamError(
            path or "config", dict(value), f"a mapping that also gives {', '.join(missing)}"
        )
    return cls(**{f.name: f.metadata["rule"](_join(path, f.name), value[f.name]) for f in fields})


def _check_across(config: Config) -> Config:
    """Rules that involve more than one field."""
    keep, unfreeze = config.transfer.keep, config.transfer.unfreeze
    if isinstance(keep, int) and unfreeze > keep:
        raise KerasTeamError(
            "transfer.unfreeze", unfreeze, f"an int in [0, {keep}] (no more than transfer.keep)"
        )
    seen: list[str] = []
    for i, follower in enumerate(config.followers):
        if follower.name in seen:
            raise KerasTeamError(
                f"followers[{i}].name", follower.name, f"a name not used by another follower (used: {', '.join(seen)})"
            )
        seen.append(follower.name)
    return config


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# Loading: defaults <- file <- overrides, then validation.


def default_config_text() -> str:
    """The default config YAML, with a comment on every field.

    Example:
        >>> text = default_config_text()
        >>> "transfer:" in text and "# " in text
        True
    """
    return importlib.resources.files("keras_team.app").joinpath("default_config.yaml").read_text("utf-8")


def _merge(base: Any, update: Any) -> Any:
    """Mappings merge key by key; anything else (lists too) replaces."""
    if isinstance(base, dict) and isinstance(update, Mapping):
        merged = dict(base)
        for key, value in update.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return update


def _fill_followers(raw: dict, template: dict | None) -> dict:
    """Give each listed follower the default follower's values for fields it omits."""
    followers = raw.get("followers")
    if template is None or not isinstance(followers, list):
        return raw
    filled = [_merge(template, f) if isinstance(f, Mapping) else f for f in followers]
    return {**raw, "followers": filled}


def _read_file(path: str | os.PathLike) -> Any:
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise KerasTeamError("config", name, f"a readable YAML file ({reason})") from None
    data = _parse_yaml(text, "config", name)
    if data is None:  # an empty file changes nothing
        return {}
    if not isinstance(data, dict):
        names = ", ".join(f.name for f in dataclasses.fields(Config))
        raise KerasTeamError("config", name, f"a YAML mapping of keys {names} at the top level")
    return data


def _apply_override(raw: dict, override: str) -> dict:
    """Apply one ``a.b.0.c=value`` override to the raw mapping."""
    if not isinstance(override, str) or "=" not in override:
        raise KerasTeamError("--set", override, "PATH=VALUE, e.g. transfer.keep=3")
    dotted, text = (s.strip() for s in override.split("=", 1))
    parts = re.sub(r"\[(\d+)\]", r".\1", dotted).split(".")  # followers[0].x == followers.0.x
    if not all(parts):
        raise KerasTeamError("--set", override, "PATH=VALUE with a dotted PATH, e.g. transfer.head.dropout=0.5")
    value = _parse_yaml(text, dotted, text)

    def put(node: Any, index: int, path: str) -> Any:
        if index == len(parts):
            return _merge(node, value)
        part = parts[index]
        if isinstance(node, list):
            if not (part.isdigit() and int(part) < len(node)):
                allowed = f"an index 0..{len(node) - 1}" if node else "no index: the list is empty"
                raise KerasTeamError(f"{path}[{part}]", text, allowed)
            i = int(part)
            return [*node[:i], put(node[i], index + 1, _join(path, i)), *node[i + 1 :]]
        if node is None:  # e.g. followers.0.distill.alpha while distill is null
            return {part: put(None, index + 1, _join(path, part))}
        if not isinstance(node, dict):
            raise KerasTeamError(_join(path, part), text, f"a known field ({path} has no subfields)")
        if part not in node:
            raise KerasTeamError(_join(path, part), text, _keys_allowed(list(node), part))
        return {**node, part: put(node[part], index + 1, _join(path, part))}

    return put(raw, 0, "")


def load_config(
    path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> Config:
    """Load the default config, merge a YAML file over it, apply overrides, validate.

    A file may give only some fields. Each override is ``"dotted.path=value"``,
    the value read as YAML; a number in the path indexes a list. Any mistake
    raises :class:`~keras_team.errors.KerasTeamError` naming the field.

    Example:
        >>> config = load_config(overrides=["data.target.classes=[5, 6]",
        ...                                 "followers.0.epochs=5"])
        >>> config.data.target.classes, config.followers[0].epochs
        ((5, 6), 5)
    """
    defaults = _parse_yaml(default_config_text(), "default_config.yaml", "default_config.yaml")
    default_followers = defaults.get("followers") or [None]
    template = default_followers[0]
    raw = defaults if path is None else _merge(defaults, _read_file(path))
    raw = _fill_followers(raw, template)
    if isinstance(overrides, str):  # a lone string is one override, not its characters
        overrides = [overrides]
    for override in overrides:
        raw = _fill_followers(_apply_override(raw, override), template)
    return Config.from_dict(raw)


__all__ = [
    "Config",
    "DataConfig",
    "DistillConfig",
    "FollowerConfig",
    "HeadConfig",
    "LeaderConfig",
    "TaskConfig",
    "TeamConfig",
    "TrainConfig",
    "TransferConfig",
    "default_config_text",
    "load_config",
]
