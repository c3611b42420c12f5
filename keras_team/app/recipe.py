"""The staged recipe behind `keras-team run`: a plan, then each stage one `model.fit`.

Before anything trains, `make_plan` loads the data and builds the whole team
once from the untrained architecture (or the given leader): the cut, the head,
the fine-tuning, every follower's tap and name, the team and the baseline. A
mistake anywhere in the config is then an error in seconds, and
`keras-team check` prints the plan without training.

Stages, in order: ``leader`` (train on the source task, or load a given
`.keras` leader), ``transfer`` (train a new head on the frozen cut),
``fine_tune`` (optional: unfreeze the top k kept layers at a low rate) --
each once per leader, suffixed by its name when there are several --
``followers`` (each on cached taps of the frozen leaders), ``team`` (optional
joint fine-tuning), ``baseline`` (the first leader's architecture trained
from scratch on the target alone), ``evaluate`` (member by member and as an
ensemble; then ``team.keras``, ``report.json`` and the plots are written) and
last ``export`` (optional, when ``export.formats`` names any: SavedModel and
LiteRT files of the team, each verified against it; `keras_team.export`). An
export that fails (`keras_team.errors.ExportFailed`) leaves the finished run
whole: a rerun, with the same or other ``export`` fields, redoes only the export.

Each stage is seeded by its own name, reads its inputs from the files earlier
stages saved, saves its model to a file of its own and is then recorded in
`state.json`: a rerun skips finished stages (and finished followers), an
interrupted stage continues from its last epoch (`BackupAndRestore`), and a
resumed run gives the numbers of an uninterrupted one. A stage whose loss or
weights become NaN/inf stops with an error and saves nothing.

Example (what `keras-team run --set leader.epochs=2` does; a run takes a minute):
    $ python -c "from keras_team.app import config, recipe; recipe.run(config.load_config(overrides=['leader.epochs=2']))"
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import time
import zlib

import keras
import numpy as np
import tensorflow as tf

from keras_team import caching, checkpoints, distribute, heads, probe, zoo
from keras_team.app.config import Config, DataConfig, TaskConfig, TeamLeaderConfig, TransferConfig, stage_suffix
from keras_team.app import supervisor
from keras_team.app.progress import Output
from keras_team.app.workspace import Workspace, WorkerSpace
from keras_team.files import load_model
from keras_team.caching import cache_taps, fit_follower
from keras_team.cuts import CutPoint, cut_points, default_cut, resolve_cut
from keras_team.data import Task, examples, load_task
from keras_team.errors import ExportFailed, KerasTeamError
from keras_team.files import atomic_path, read_json_mapping, write_text
from keras_team.followers import Distill, Follower
from keras_team.freezing import to_unfreeze, unfreeze
from keras_team.heads import LOSS
from keras_team.layers import FitImages
from keras_team.team import Team
from keras_team.transferability import CutScore, rank_cuts
from keras_team.transfers import transfer

ARCHITECTURES = {"seed_cnn": zoo.seed_cnn, "residual_cnn": zoo.residual_cnn}
SMALLEST_IMAGES = {"seed_cnn": 4, "residual_cnn": 2}  # the least height and width each takes (2x2 poolings)
CHECKPOINT_SECONDS = 5.0  # the least time between two checkpoints of a stage (a kill loses at most this much)
SHARED_TAPS = "shared_taps"  # in the run directory: a streamed task's taps, cached once for the followers


def config_field(task: str, field: str) -> str:
    """The config path of an argument the data functions name: `shots` of the target is `data.target.shots`.

    Example:
        >>> config_field("target", "shots"), config_field("source", "batch_size")
        ('data.target.shots', 'data.batch_size')
    """
    if field in TaskConfig.model_fields:
        return f"data.{task}.{field}"
    return f"data.{field}" if field in DataConfig.model_fields else field


def _load_task(config: Config, task: str, **kwargs) -> Task:
    data, spec = config.data, getattr(config.data, task)
    try:
        loaded = load_task(spec.name, classes=spec.classes, shots=spec.shots, seed=config.seed,
                           batch_size=data.batch_size, validation=data.validation, data_dir=data.data_dir,
                           download=data.download, stream=data.stream, **kwargs)
        # The global batch the current strategy's replicas share: checked now, not at the first stage.
        distribute.global_batch_size(loaded.batch_size, len(loaded.labels("train")))
    except KerasTeamError as error:
        if error.field == "test":  # the test split a source without one has held out: not a config field
            raise KerasTeamError(f"data.{task}.name", spec.name, "data with a test split (a test/ folder, or x_test "
                                 "and y_test in a .npz), or enough examples of every class to hold "
                                 f"{error.value:.0%} of them out as one: {error.allowed}") from error
        if error.field in ("x", "y"):  # the examples themselves: the data the name points to
            raise KerasTeamError(f"data.{task}.name", spec.name, f"{error.allowed}: it holds {error.value}") from error
        raise KerasTeamError(config_field(task, error.field), error.value, error.allowed) from error
    return loaded


def load_tasks(config: Config) -> tuple[Task, Task]:
    """The source and target tasks the config names; errors name the full config field.

    Example:
        >>> from keras_team.app.config import load_config
        >>> source, target = load_tasks(load_config())
        >>> source.num_classes, target.class_names
        (5, ('5', '6', '7', '8', '9'))
    """
    source = _load_task(config, "source")
    target = _load_task(config, "target", augment=config.data.augment)
    if source.input_shape != target.input_shape:
        raise KerasTeamError("data.target.name", config.data.target.name,
                             f"images shaped like the source's {source.input_shape}, got {target.input_shape}")
    if target.num_classes < 2:
        raise KerasTeamError("data.target.classes", list(config.data.target.classes or []),
                             "at least 2 classes (with one, every member scores 1.000 and learns nothing)")
    return source, target


def task_warnings(config: Config) -> list[str]:
    """Warnings about the tasks that are not errors, e.g. target classes the leader learnt.

    Example:
        >>> from keras_team.app.config import load_config
        >>> task_warnings(load_config(overrides=["data.target.classes=[4, 5]"]))
        ['target classes [4] are also source classes of digits: the leader has seen them, so the transfer gain is not a gain on new classes']
    """
    source, target = config.data.source, config.data.target
    if source.name != target.name:
        return []
    if source.classes is None or target.classes is None:
        shared = sorted(set(source.classes or target.classes or ["all"]))
    else:
        shared = sorted(set(source.classes) & set(target.classes))
    if not shared:
        return []
    return [f"target classes {shared} are also source classes of {target.name}: the leader has seen them, "
            "so the transfer gain is not a gain on new classes"]


def _head(spec: TransferConfig, num_classes: int, field: str = "transfer") -> keras.layers.Layer:
    head = spec.head
    try:
        keras.activations.get(head.activation)
    except (ValueError, TypeError):
        names = ", ".join(sorted(n for n in dir(keras.activations) if not n.startswith("_") and n not in ("get", "serialize", "deserialize")))
        raise KerasTeamError(f"{field}.head.activation", head.activation, f"a Keras activation name: {names}") from None
    if head.kind == "conv":
        return heads.conv(num_classes, filters=head.hidden or (64,), dropout=head.dropout, activation=head.activation)
    if head.kind == "cosine":
        return heads.cosine(num_classes, hidden=head.hidden, dropout=head.dropout, activation=head.activation)
    if head.kind == "linear_probe":  # its statistics and L2 strength are set when it is fitted (keras_team.probe)
        return heads.probe(num_classes)
    return heads.dense(num_classes, hidden=head.hidden, dropout=head.dropout, activation=head.activation)


AUTO = "auto"  # transfer.keep: the cut keras_team.rank_cuts scores best on the target (`rank_keep`)


def rank_keep(leader: keras.Model, target: Task) -> tuple[CutScore, list[CutScore]]:
    """What `keep: auto` chooses: the cut, and the leader's block outputs ranked by `keras_team.rank_cuts`.

    The scores are read from the target's training and validation examples,
    never its test split. The choice is the block with the fewest features
    among those within one standard error of the best score
    (``sqrt(p (1 - p) / n)`` of a leave-one-out accuracy p on n examples;
    Breiman et al.'s one-standard-error rule): scores that close are noise,
    and fewer features leave a head on few examples less to fit.

    Example (what `keras-team run --set transfer.keep=auto` chooses from, for a trained `leader`):
        $ python -c "from keras_team.app import recipe; print(recipe.rank_keep(leader, target)[0])"
    """
    x, y = examples(target, ["train", "validation"], batch_size=128)  # a streamed task is read, never held
    ranking = rank_cuts(leader, x, y, cuts=cut_points(leader, view="blocks"))
    best = ranking[0].score
    close = [s for s in ranking if s.score >= best - math.sqrt(best * (1 - best) / len(y))]
    return min(close, key=lambda s: math.prod(s.cut.output_shape[1:])), ranking


def check_keep(leader: keras.Model, keep: int | str | None, field: str = "transfer.keep") -> CutPoint:
    """The cut `keep` names (None: the middle block output, `keras_team.cuts.default_cut`), checked.

    `keep: auto` is chosen on data once the leader is trained (`rank_keep`);
    until then the middle block output stands in for it.

    A `KerasTeamError` on `field` unless `keep` is a valid cut of `leader`.

    Example:
        >>> check_keep(zoo.seed_cnn((8, 8, 1), 5), 3).name, check_keep(zoo.residual_cnn((8, 8, 1), 5), None).name
        ('fc1', 'pool1')
    """
    try:
        return default_cut(leader) if keep is None or keep == AUTO else resolve_cut(leader, keep)
    except KerasTeamError as error:
        raise KerasTeamError(field, keep, error.allowed) from error


def leader_field(config: Config, index: int, field: str) -> str:
    """Where the config sets `field` of its `index`-th leader: `leader.path`, `leaders[1].transfer.keep`, ...

    Example:
        >>> from keras_team.app.config import load_config
        >>> leader_field(load_config(), 0, "transfer.keep"), leader_field(load_config(), 0, "path")
        ('transfer.keep', 'leader.path')
    """
    if config.leaders:
        return f"leaders[{index}].{field}"
    return field if field.startswith("transfer") else f"leader.{field}"


def load_leader(path: str, task: Task | None, field: str = "leader.path") -> keras.Model:
    """The leader saved at `path`, checked to take one input; errors name `field`.

    Given a `task` whose images differ from the leader's input, a `FitImages`
    step in front resizes and converts them inside the model (`zoo.fit_input`).
    """
    leader = load_model(path, compile=False, field=field)
    if len(leader.inputs) != 1:
        raise KerasTeamError(field, path, f"a leader with one input, got {len(leader.inputs)} inputs")
    if task is None or tuple(leader.inputs[0].shape[1:]) == tuple(task.input_shape):
        return leader
    try:
        return zoo.fit_input(leader, task.input_shape)
    except KerasTeamError as error:
        raise KerasTeamError(field, path, f"a leader taking images shaped like the data's {task.input_shape}, or "
                             f"images it can be fitted to: {error.allowed}") from error


def new_leader(config: Config, index: int, source: Task, *, pretrained: bool = True) -> keras.Model:
    """The `index`-th leader, untrained (or with its application's weights unless not `pretrained`).

    Example:
        >>> from keras_team.app.config import load_config
        >>> config = load_config()
        >>> new_leader(config, 0, load_tasks(config)[0]).name
        'leader'
    """
    spec = config.team_leaders[index]
    if not spec.application:
        height, width = source.input_shape[:2]
        if min(height, width) < SMALLEST_IMAGES[spec.architecture]:
            smallest = SMALLEST_IMAGES[spec.architecture]
            raise KerasTeamError(leader_field(config, index, "architecture"), spec.architecture,
                                 f"an architecture that takes the data's {height}x{width} images ({spec.architecture} "
                                 f"pools them down and takes {smallest}x{smallest} or larger; "
                                 f"{', '.join(f'{a} from {n}x{n}' for a, n in SMALLEST_IMAGES.items())})")
        return ARCHITECTURES[spec.architecture](source.input_shape, source.num_classes, name=spec.name)
    try:
        return zoo.application(spec.application, source.input_shape, source.num_classes,
                               weights=spec.weights if pretrained else None, application_shape=spec.input_shape,
                               name=spec.name)
    except KerasTeamError as error:
        raise KerasTeamError(leader_field(config, index, error.field), error.value, error.allowed) from error


def is_pretrained(spec: TeamLeaderConfig) -> bool:
    """Whether a leader comes trained: an application with ImageNet weights (its source stage trains nothing).

    Example:
        >>> from keras_team.app.config import load_config
        >>> config = load_config(overrides=["leader.application=MobileNetV3Small"])
        >>> is_pretrained(config.team_leaders[0]), is_pretrained(load_config().team_leaders[0])
        (True, False)
    """
    return bool(spec.application and spec.weights)


def build_student(config: Config, index: int, leader: keras.Model, target: Task,
                  cut: CutPoint | None = None) -> keras.Model:
    """The `index`-th leader's kept part (at `cut`, default its config's), copied and frozen, with a new head."""
    spec = config.team_leaders[index].transfer
    field = leader_field(config, index, "transfer")
    keep = cut or check_keep(leader, spec.keep, f"{field}.keep")
    head = _head(spec, target.num_classes, field)
    try:
        return transfer(leader, keep, head, name=f"transfer{stage_suffix(config.team_leaders[index].name)}")
    except KerasTeamError as error:
        path = config.team_leaders[index].path
        if error.field == "head":  # the head does not take the features at the cut
            raise KerasTeamError(f"{field}.head.kind", spec.head.kind, error.allowed) from error
        if error.field == "leader" and path:  # a given leader whose kept layers cannot be copied
            raise KerasTeamError(leader_field(config, index, "path"), path, error.allowed) from error
        raise


def build_team(config: Config, students: dict[str, keras.Model], target: Task) -> Team:
    """The transfer models as leaders plus the config's followers, untrained."""
    followers = []
    for i, f in enumerate(config.followers):
        try:
            followers.append(Follower(
                heads.probe(target.num_classes, pool=f.pool, name=f.name) if f.kind == "linear_probe"  # standardized, linear
                else zoo.mlp(target.num_classes, hidden=f.hidden, dropout=f.dropout, name=f.name),
                tap=f.tap, temperature=f.temperature, leaders=f.leaders, combine=f.combine,
                distill=Distill(f.distill.temperature, f.distill.student_loss_weight) if f.distill else None))
        except KerasTeamError as error:
            raise KerasTeamError(f"followers[{i}].{error.field.rsplit('.', 1)[-1]}", error.value, error.allowed) from error
    try:
        return Team(students, followers)
    except KerasTeamError as error:
        raise KerasTeamError(_follower_field(config, error), error.value, error.allowed) from error


def _follower_field(config: Config, error: KerasTeamError) -> str:
    """`followers[mlp].tap` (the Team's naming) -> `followers[0].tap` (the config's)."""
    for i, f in enumerate(config.followers):
        if error.field.startswith(f"followers[{f.name}]"):
            return f"followers[{i}]" + error.field[len(f"followers[{f.name}]"):]
        if error.field == "followers" and error.value == f.name:
            return f"followers[{i}].name"
    return error.field


def build_baseline(config: Config, leader: keras.Model, target: Task, keep: str | None = None) -> keras.Model:
    """The first leader's architecture up to its cut (`keep`, default its config's), freshly initialised.

    Its head is the transfer's (a `linear_probe` reads frozen features: from
    scratch, the dense head it stands in for); nothing is frozen.
    """
    spec = config.team_leaders[0].transfer
    if spec.head.kind == "linear_probe":
        spec = spec.model_copy(update={"head": spec.head.model_copy(update={"kind": "dense"})})
    scratch = keras.models.clone_model(leader)
    return transfer(scratch, check_keep(scratch, spec.keep if keep is None else keep), _head(spec, target.num_classes),
                    freeze=False, inference_mode=False, name="baseline")


def _weights(model: keras.Model) -> tuple[int, int]:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return model.count_params(), trainable


@dataclasses.dataclass
class Plan:
    """What a config will do, checked by building every model once, untrained.

    Attributes:
        source, target: the tasks.
        leaders: name -> the untrained architecture, or the leader loaded from its path.
        cuts: name -> where that leader is cut.
        students: name -> its untrained transfer model.
        team, baseline: the untrained team and scratch baseline.
        stages: stage -> what it does, in run order.
        warnings: things worth knowing that are not errors.
    """

    source: Task
    target: Task
    leaders: dict[str, keras.Model]
    cuts: dict[str, CutPoint]
    students: dict[str, keras.Model]
    team: Team
    baseline: keras.Model
    stages: dict[str, str]
    warnings: list[str]
    rankings: dict[str, tuple[CutScore, list[CutScore]]] = dataclasses.field(default_factory=dict)  # keep auto, chosen
    auto: set[str] = dataclasses.field(default_factory=set)  # the leaders whose keep is auto

    def _auto(self, name: str) -> str:
        """What `keep: auto` chose for leader `name` (nothing when its keep is not auto)."""
        if name in self.rankings:
            chosen, ranking = self.rankings[name]
            return (f", keep auto: rank_cuts score {chosen.score:.3f} on the target's training+validation "
                    f"(best {ranking[0].score:.3f} of {len(ranking)} blocks)")
        if name in self.auto:
            return ", keep auto: a stand-in until the leader stage; rank_cuts then chooses on the target's training+validation"
        return ""

    def describe(self) -> str:
        """The plan as text: tasks, cut, models with parameter counts, stages."""
        source, target = self.source, self.target
        lines = [
            f"source  {source.name}: {source.num_classes} classes, {len(source.labels('train'))} training examples, "
            f"inputs {source.input_shape}{_streamed(source)}",
            f"target  {target.name}: {target.num_classes} classes, {len(target.labels('train'))} training examples "
            f"({len(target.labels('validation'))} validation, {len(target.labels('test'))} test){_streamed(target)}",
            f"classes source {_names(source.class_names)}; target {_names(target.class_names)}",
        ]
        several = len(self.cuts) > 1
        lines += [f"input   {f'{name}: ' if several else ''}{layer.describe(source.input_shape)}, inside the model "
                  f"({layer.name})" for name, leader in self.leaders.items()
                  for layer in leader.layers if isinstance(layer, FitImages)]
        lines += [f"cut     {f'{name}: ' if several else ''}{cut.name} (depth {cut.depth}, features {cut.output_shape})"
                  f"{self._auto(name)}" for name, cut in self.cuts.items()]
        team = self.team
        rows = [*((f"leader {name}" if several else "leader", m) for name, m in self.leaders.items()),
                *((f"transfer {name}" if several else "transfer", m) for name, m in self.students.items()),
                *((f.name, team.follower_graphs[f.name]) for f in team.followers), ("baseline", self.baseline)]
        width = max(len(name) for name, _ in rows)
        lines.append("models")
        lines += [f"  {name:<{width}}  {total:>9,} parameters, {trainable:>9,} trainable"
                  for name, (total, trainable) in ((n, _weights(m)) for n, m in rows)]
        lines.append("stages")
        lines += [f"  {i}. {name:<10} {what}" for i, (name, what) in enumerate(self.stages.items(), 1)]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def make_plan(config: Config) -> Plan:
    """Load the tasks and build every model of the run once, untrained; raise the first mistake.

    Example:
        >>> from keras_team.app.config import load_config
        >>> print(make_plan(load_config()).describe())
        source  digits: 5 classes, 504 training examples, inputs (8, 8, 1)
        target  digits: 5 classes, 25 training examples (121 validation, 269 test)
        classes source 0, 1, 2, 3, 4; target 5, 6, 7, 8, 9
        cut     pool1 (depth 3, features (None, 4, 4, 16))
        ...
          5. evaluate   members, team ensemble and baseline on the target's test split; team.keras, the report
    """
    source, target = load_tasks(config)
    leaders, cuts, students, stages, rankings = {}, {}, {}, {}, {}
    for index, spec in enumerate(config.team_leaders):
        suffix, said = stage_suffix(spec.name), f"{spec.name}: " if config.leaders else ""
        if spec.path:
            leaders[spec.name] = load_leader(spec.path, source, leader_field(config, index, "path"))
            stages[f"leader{suffix}"] = f"{said}load {spec.path}"
        else:  # an application's structure: its weights are downloaded by the leader stage
            leaders[spec.name] = new_leader(config, index, source, pretrained=False)
            if is_pretrained(spec):
                stages[f"leader{suffix}"] = (f"{said}{spec.application} with ImageNet weights: already trained, "
                                             f"not trained on {source.name} ({leader_field(config, index, 'weights')}=null "
                                             "trains it there)")
            else:
                kind = f"{spec.application} (random weights)" if spec.application else spec.architecture
                stages[f"leader{suffix}"] = f"{said}train {kind} on {source.name} ({spec.epochs} epochs)"
        cuts[spec.name] = check_keep(leaders[spec.name], spec.transfer.keep, leader_field(config, index, "transfer.keep"))
        if spec.transfer.keep == AUTO and spec.path:  # a trained leader: chosen now
            rankings[spec.name] = rank_keep(leaders[spec.name], target)
            cuts[spec.name] = rankings[spec.name][0].cut  # the chosen
    for index, spec in enumerate(config.team_leaders):
        suffix, said, t = stage_suffix(spec.name), f"{spec.name}: " if config.leaders else "", spec.transfer
        students[spec.name] = build_student(config, index, leaders[spec.name], target, cuts[spec.name])
        keep = f"{cuts[spec.name].name!r} (the default: the middle block)" if t.keep is None else repr(t.keep)
        if t.keep == AUTO:
            keep = (f"{cuts[spec.name].name!r} (auto: chosen by rank_cuts)" if spec.name in rankings
                    else "the cut rank_cuts chooses on the target (auto)")
        head = (f"fit a linear probe (L2 of {list(t.head.l2)} chosen on validation, at most {t.epochs} epochs)"
                if t.head.kind == "linear_probe" else f"train a new head ({t.epochs} epochs)")
        stages[f"transfer{suffix}"] = f"{said}keep {keep} frozen, {head}"
        if t.unfreeze and t.fine_tune_epochs:
            try:
                unfreeze(build_student(config, index, leaders[spec.name], target), top=t.unfreeze)
            except KerasTeamError as error:
                raise KerasTeamError(leader_field(config, index, "transfer.unfreeze"), t.unfreeze, error.allowed) from error
            stages[f"fine_tune{suffix}"] = (f"{said}unfreeze the top {t.unfreeze} kept layers ({t.fine_tune_epochs} "
                                            "epochs), kept if it raises the validation accuracy")
    team = build_team(config, students, target)
    stages["followers"] = (f"{len(config.followers)} follower(s) on cached taps: "
                           + ", ".join(f"{f.name} ({_taps(f.tap)}, {f.epochs} epochs)" for f in config.followers))
    if config.team.epochs:
        stages["team"] = f"joint fine-tuning, summed member losses ({config.team.epochs} epochs)"
    first = config.team_leaders[0]
    baseline = build_baseline(config, leaders[first.name], target,
                              cuts[first.name].name if first.transfer.keep == AUTO else None)
    stages["baseline"] = f"the first leader's architecture from scratch on the target ({config.baseline.epochs} epochs)"
    stages["evaluate"] = "members, team ensemble and baseline on the target's test split; team.keras, the report"
    if config.export.formats:
        stages["export"] = f"{', '.join(config.export.formats)} of the team, each verified against it on validation data"
    auto = {spec.name for spec in config.team_leaders if spec.transfer.keep == AUTO}
    return Plan(source, target, leaders, cuts, students, team, baseline, stages, task_warnings(config), rankings, auto)


def _seed(config: Config, stage: str) -> None:
    """Seed one stage from the run's seed and the stage's name: its numbers do not depend on earlier stages."""
    keras.utils.set_random_seed((config.seed * 1_000_003 + zlib.crc32(stage.encode())) % 2**31)


def _finite(model: keras.Model) -> bool:
    return all(np.all(np.isfinite(w)) for w in model.get_weights())


class Recipe:
    """Runs the stages of one config in one started workspace.

    Example (inside `run`, which prepares the workspace and the plan):
        $ keras-team run --config my.yaml
    """

    def __init__(self, config: Config, workspace: Workspace, plan: Plan, *, output: Output | None = None):
        self.config = config
        self.ws = workspace
        self.plan = plan
        self.out = output or Output()
        self._frozen_outputs: dict[str, dict] = {}  # by leader suffix: its transfer's feature caches, for its fine-tuning

    # --- helpers ---------------------------------------------------------
    def _checkpoint(self, stage: str) -> checkpoints.BackupAndRestore:
        """The stage's crash-safe checkpoint (`keras_team.checkpoints`); a checkpoint it sets aside is a warning line."""
        return checkpoints.BackupAndRestore(self.ws.backup_dir(stage), every_seconds=CHECKPOINT_SECONDS,
                                            warn=self.out.warn)

    def _callbacks(self, stage: str, epochs: int, checkpoint: checkpoints.BackupAndRestore) -> list:
        """The checkpoint, the CSV and TensorBoard logs, a stop on a non-finite loss and the progress display."""
        logs = self.ws.path("logs")
        logs.mkdir(parents=True, exist_ok=True)
        return [
            checkpoint,
            checkpoints.CSVLogger(logs / f"{stage}.csv", checkpoint),  # continues the log of a resumed stage
            keras.callbacks.TensorBoard(str(logs / "tensorboard" / stage), write_graph=False),
            _StopOnNonFinite(),
            *self.out.callbacks(epochs),
        ]

    def _check_finite(self, stage: str, model: keras.Model, history, field: str, rate: float) -> None:
        losses = history.history.get("loss", []) if history is not None else []
        bad = [i for i, loss in enumerate(losses) if not math.isfinite(loss)]
        if bad or not _finite(model):
            if self.ws.writes:
                shutil.rmtree(self.ws.backup_dir(stage), ignore_errors=True)
            when = f"in epoch {bad[0] + 1}" if bad else "by the end"
            raise KerasTeamError(field, rate, f"a learning rate at which stage {stage!r} stays finite "
                                 f"(its loss or weights became NaN/inf {when} on finite inputs, every split "
                                 "checked when loaded; nothing was saved)")

    def _compile_options(self, task: Task) -> dict:
        cfg = self.config.distribute
        examples = len(task.labels("train"))
        steps = math.ceil(examples / distribute.global_batch_size(task.batch_size, examples))
        try:
            per_call = distribute.steps_per_execution(cfg.steps_per_execution, steps)
        except KerasTeamError as error:
            raise KerasTeamError(f"distribute.{error.field}", error.value, error.allowed) from None
        return {"jit_compile": cfg.jit_compile, "steps_per_execution": per_call}

    def _fit_resumable(self, stage: str, model: keras.Model, task: Task, epochs: int):
        """`model.fit` on `task` from the stage's checkpoint; returns the `History`.

        The training data are one repeated, seeded stream of epochs; a resumed
        stage skips the batches of the epochs it restored, so it draws the
        shuffles an uninterrupted one draws next and ends with its weights.
        """
        checkpoint = self._checkpoint(stage)
        train, steps = _from_epoch(task.dataset("train", training=True), distribute.restore(checkpoint, model))
        # model.fit on one machine; on several, every worker, the chief writing the checkpoint and logs
        return distribute.fit(model, train, steps_per_epoch=steps, validation_data=task.dataset("validation"),
                              epochs=epochs, callbacks=self._callbacks(stage, epochs, checkpoint),
                              verbose=self.out.fit_verbose)  # the training dataset shuffles itself, seeded

    def _fitter(self, cfg: TransferConfig, *, unfreeze: int = 0, reuse: dict | None = None):
        """How a transfer or fine-tune stage of `cfg` fits: on its frozen part's output (`transfer.cache`) or whole."""
        return functools.partial(self._fit_cached, views=cfg.views, unfreeze=unfreeze, reuse=reuse) if cfg.cache else self._fit

    def _fit_cached(self, stage: str, model: keras.Model, task: Task, epochs: int, learning_rate: float,
                    field: str, views: int = 1, unfreeze: int = 0, reuse: dict | None = None) -> dict:
        """`_fit` of a transferred model on its frozen part's output, computed once (`keras_team.caching.fit_transfer`).

        Same weights as `_fit` to float tolerance when the target does not
        augment (the same seeded shuffles); an augmenting target is cached as
        `transfer.views` augmented passes. Same checkpoints and resume.
        `unfreeze`: the layers the next stage fine-tunes, cached under (in
        `reuse`, for that stage to read: one pass of the frozen part for both).
        """
        if not _in_memory(task) or caching.split_frozen(model) is None:
            return self._fit(stage, model, task, epochs, learning_rate, field)
        views = min(views, epochs) if task.augment else 1
        train = task.dataset("train", training=True) if task.augment else task.dataset("train")
        options = self._compile_options(task)
        if self.config.distribute.steps_per_execution == "auto":  # fit_transfer's: an epoch of the cache per call
            options["steps_per_execution"] = "auto"
        checkpoint = self._checkpoint(stage)
        start = time.perf_counter()
        history = caching.fit_transfer(model, train, task.dataset("validation"), epochs=epochs,
                                       optimizer=keras.optimizers.Adam(learning_rate), batch_size=task.batch_size,
                                       seed=task.seed, views=views, callbacks=self._callbacks(stage, epochs, checkpoint),
                                       verbose=self.out.fit_verbose, steps_per_execution=options["steps_per_execution"],
                                       jit_compile=options["jit_compile"],
                                       below=to_unfreeze(model, top=unfreeze) if unfreeze else (), reuse=reuse)
        self._check_finite(stage, model, history, field, learning_rate)
        return {"seconds": time.perf_counter() - start, "replicas": _replicas(model), "cached": True, **_last(history)}

    def _fit(self, stage: str, model: keras.Model, task: Task, epochs: int, learning_rate: float, field: str,
             loss: keras.losses.Loss = LOSS) -> dict:
        model.compile(keras.optimizers.Adam(learning_rate), loss, metrics=["accuracy"], **self._compile_options(task))
        start = time.perf_counter()
        history = self._fit_resumable(stage, model, task, epochs)
        self._check_finite(stage, model, history, field, learning_rate)
        return {"seconds": time.perf_counter() - start, "replicas": _replicas(model), **_last(history)}

    def _probe(self, stage: str, model: keras.Model, cfg: TransferConfig, field: str) -> dict:
        """Fit a transfer model's linear head on its frozen cut's features, computed once (`keras_team.probe`)."""
        target, start = self.plan.target, time.perf_counter()
        (x, y), (xv, yv) = (examples(target, [split]) for split in ("train", "validation"))  # features held, not images
        fit = probe.fit_probe(model.head, (probe.features_of(model.body, x), y), (probe.features_of(model.body, xv), yv),
                              l2=cfg.head.l2, epochs=cfg.epochs, learning_rate=cfg.learning_rate,
                              batch_size=target.batch_size, seed=self.config.seed,
                              callbacks=self.out.callbacks(cfg.epochs), verbose=self.out.fit_verbose)
        self._check_finite(stage, model, None, f"{field}.learning_rate", cfg.learning_rate)
        return {"seconds": time.perf_counter() - start, "replicas": _replicas(model), **fit.figures()}

    def _choose_cut(self, name: str, leader: keras.Model) -> dict:
        """`keep: auto`: rank the trained leader's blocks on the target (`rank_keep`); the figures say what won."""
        chosen, ranking = self.plan.rankings.get(name) or rank_keep(leader, self.plan.target)
        self.plan.rankings[name], self.plan.cuts[name] = (chosen, ranking), chosen.cut
        self.out.say(f"{'cut':<11}keep auto: {chosen.cut.name} (rank_cuts score {chosen.score:.3f}; best "
                     f"{ranking[0].score:.3f} of {len(ranking)} blocks, {sum(s.seconds for s in ranking):.1f} s)")
        return {"cut": chosen.cut.name, "cut_score": chosen.score,
                "cut_ranking": [[s.cut.name, s.score] for s in ranking]}

    def _load(self, name: str) -> keras.Model:
        return load_model(self.ws.model_path(name), compile=False, field="output_dir")

    def _stage(self, stage: str, description: str, build, output: str) -> None:
        """Unless `stage` is done: seed it, `build()`, save the model as `output`, record the stage."""
        if self.ws.done(stage):
            self.out.say(f"{stage:<11}done earlier")
            return
        _seed(self.config, stage)
        self.out.stage(stage, description)
        model, figures = build()
        self.ws.save_model(model, output)
        self.ws.finish(stage, figures)
        self.out.summary(stage, figures)

    # --- stages ----------------------------------------------------------
    def train_leader(self, index: int) -> None:
        spec, source = self.config.team_leaders[index], self.plan.source
        stage = f"leader{stage_suffix(spec.name)}"

        def build():
            if spec.path:
                return self.plan.leaders[spec.name], {"seconds": 0.0, "loaded_from": spec.path}
            if is_pretrained(spec):
                start = time.perf_counter()
                leader = new_leader(self.config, index, source)
                return leader, {"seconds": time.perf_counter() - start, "weights": spec.weights}
            leader = new_leader(self.config, index, source)
            # The source stage's own options (training only): augmentation and label smoothing.
            figures = self._fit(stage, leader, dataclasses.replace(source, augment=spec.augment), spec.epochs,
                                spec.learning_rate, leader_field(self.config, index, "learning_rate"),
                                heads.SmoothedLoss(spec.label_smoothing) if spec.label_smoothing else LOSS)
            figures["source_test_accuracy"] = _accuracy(leader, source)
            return leader, figures

        self._stage(stage, self.plan.stages[stage], build, f"{stage}.keras")

    def train_transfer(self, index: int) -> str:
        """Train the `index`-th leader's head (and fine-tune); returns the file holding its transfer model."""
        spec, target = self.config.team_leaders[index], self.plan.target
        suffix, cfg = stage_suffix(spec.name), spec.transfer
        field = leader_field(self.config, index, "transfer")

        def build():
            leader = self._load(f"leader{suffix}.keras")
            chosen = self._choose_cut(spec.name, leader) if cfg.keep == AUTO else {}
            model = build_student(self.config, index, leader, target, self.plan.cuts[spec.name])
            if cfg.head.kind == "cosine":  # start from the training split's class means (weight imprinting)
                heads.imprint(model, *examples(target, ["train"]))  # a streamed split read, not held
            if cfg.head.kind == "linear_probe":
                return model, {**chosen, **self._probe(f"transfer{suffix}", model, cfg, field)}
            fine_tunes = f"fine_tune{suffix}" in self.plan.stages  # then cached under the layers it trains, kept for it
            fit = self._fitter(cfg, unfreeze=cfg.unfreeze if fine_tunes else 0,
                               reuse=self._frozen_outputs.setdefault(suffix, {}) if fine_tunes else None)
            return model, {**chosen, **fit(f"transfer{suffix}", model, target, cfg.epochs, cfg.learning_rate,
                                           f"{field}.learning_rate")}

        self._stage(f"transfer{suffix}", self.plan.stages[f"transfer{suffix}"], build, f"stages/transfer{suffix}.keras")
        if cfg.keep == AUTO:  # a resumed run: the cut its transfer stage chose
            self.plan.cuts[spec.name] = resolve_cut(self.plan.leaders[spec.name], self.ws.figures(f"transfer{suffix}")["cut"])
        if f"fine_tune{suffix}" not in self.plan.stages:
            return f"stages/transfer{suffix}.keras"

        def fine_tune():
            model = unfreeze(self._load(f"stages/transfer{suffix}.keras"), top=cfg.unfreeze)
            # The transfer stage's caches when it ran in this process (the same frozen part, unchanged)
            fit = self._fitter(cfg, reuse=self._frozen_outputs.pop(suffix, None))
            figures = fit(f"fine_tune{suffix}", model, target, cfg.fine_tune_epochs, cfg.fine_tune_learning_rate,
                          f"{field}.fine_tune_learning_rate")
            # Kept only when validation says it helps: a higher accuracy than the head alone.
            head_only = self.ws.figures(f"transfer{suffix}").get("val_accuracy", -math.inf)
            return model, {**figures, "kept": figures.get("val_accuracy", -math.inf) > head_only}

        self._stage(f"fine_tune{suffix}", self.plan.stages[f"fine_tune{suffix}"], fine_tune,
                    f"stages/fine_tune{suffix}.keras")
        if not self.ws.figures(f"fine_tune{suffix}")["kept"]:
            self.out.say(f"{'fine_tune':<11}not kept: validation accuracy no higher than the head's alone")
            return f"stages/transfer{suffix}.keras"
        return f"stages/fine_tune{suffix}.keras"

    def train_followers(self, student_files: dict[str, str]) -> str:
        """Each follower on cached taps; a finished follower is loaded, not retrained."""
        target = self.plan.target

        def build():
            team = build_team(self.config, {name: self._load(file) for name, file in student_files.items()}, target)
            train, validation, share = self._shared_taps(team)
            for i, f in enumerate(self.config.followers):
                graph = team.follower_graphs[f.name]
                weights = f"stages/followers/{f.name}.weights.h5"
                if self.ws.done("followers", f.name):
                    graph.load_weights(self.ws.model_path(weights))
                    continue
                _seed(self.config, f"followers/{f.name}")
                stage = f"follower_{f.name}"
                read = ", ".join(f.leaders or student_files) if len(student_files) > 1 else "the leader"
                self.out.stage(f"  {f.name}", f"follower on {read}'s {_taps(f.tap)} (taps cached)")
                start = time.perf_counter()
                if f.kind == "linear_probe":  # a fit per L2 strength, seconds each: no checkpoints
                    # Augmented copies of the training split (f.augment), their taps cached once beside the
                    # examples'; a streamed target (larger than memory) gets none: its taps would not fit 1 + views times.
                    copies = f.views if f.augment and _in_memory(target) else 0
                    augmented = (dataclasses.replace(target, augment=f.augment).dataset("train", training=True)
                                 if copies else None)
                    fit = probe.probe_follower(team, f.name, train, validation,
                                               augmented=augmented, copies=copies,
                                               l2=f.l2, epochs=f.epochs, learning_rate=f.learning_rate,
                                               batch_size=target.batch_size, seed=self.config.seed,
                                               callbacks=self.out.callbacks(f.epochs),
                                               verbose=self.out.fit_verbose)
                    history, figures = None, fit.figures()
                else:
                    # A streamed task's taps may not fit in memory either: cached on disk (memory-mapped), then removed
                    # (unless shared: `_shared_taps`).
                    own = _streamed(target) and not isinstance(train, caching.TapCache)
                    cache = self.ws.path("taps") / f.name if own else None
                    history = fit_follower(team, f.name, train, validation,
                                           epochs=f.epochs, optimizer=keras.optimizers.Adam(f.learning_rate),
                                           batch_size=target.batch_size, seed=self.config.seed, directory=cache,
                                           callbacks=self._callbacks(stage, f.epochs, self._checkpoint(stage)),
                                           verbose=self.out.fit_verbose)
                    if cache is not None:
                        shutil.rmtree(cache.parent, ignore_errors=True)
                    figures = _last(history)
                self._check_finite(stage, graph, history, f"followers[{i}].learning_rate", f.learning_rate)
                self.ws.save_model(graph, weights)
                self.ws.finish("followers", {"seconds": time.perf_counter() - start + share, "replicas": _replicas(graph),
                                             **figures}, part=f.name)
            shutil.rmtree(self.ws.path(SHARED_TAPS), ignore_errors=True)  # a streamed task's shared cache
            return team, {f.name: self.ws.figures("followers", f.name) for f in self.config.followers}

        self._stage("followers", self.plan.stages["followers"], build, "stages/followers.keras")
        return "stages/followers.keras"

    def _shared_taps(self, team) -> tuple:
        """The target's train and validation splits for the followers still to train, and each one's share of the
        seconds spent on them: their taps cached once for all of them (`cache_taps` of several followers) when two
        or more remain, in memory, or for a streamed task (whose taps may not fit in memory) on disk under
        `SHARED_TAPS`, memory-mapped, removed when the stage ends; else the datasets, and 0."""
        target, start = self.plan.target, time.perf_counter()
        train, validation = target.dataset("train"), target.dataset("validation")
        pending = [f.name for f in self.config.followers if not self.ws.done("followers", f.name)]
        if len(pending) < 2:
            return train, validation, 0.0
        leaders = "the leaders run" if len(team.leaders) > 1 else "the leader runs"
        folder = None if _in_memory(target) else self.ws.path(SHARED_TAPS)
        where = "" if folder is None else " (on disk: the task is streamed)"
        self.out.stage("  taps", f"{leaders} once over each split for {', '.join(pending)}{where}")
        verbose = 1 if self.out.level == "bar" else 0
        train, validation = (cache_taps(team, pending, data, directory=folder and folder / split, verbose=verbose)
                             for split, data in (("train", train), ("validation", validation)))
        return train, validation, (time.perf_counter() - start) / len(pending)

    def train_team(self, team_file: str) -> str:
        cfg, target = self.config.team, self.plan.target
        if not cfg.epochs:
            return team_file

        def build():
            team = self._load(team_file)
            team.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), **self._compile_options(target))
            start = time.perf_counter()
            history = self._fit_resumable("team", team, target, cfg.epochs)
            self._check_finite("team", team, history, "team.learning_rate", cfg.learning_rate)
            return team, {"seconds": time.perf_counter() - start, "replicas": _replicas(team), **_last(history)}

        self._stage("team", self.plan.stages["team"], build, "stages/team.keras")
        return "stages/team.keras"

    def train_baseline(self) -> None:
        cfg, target = self.config.baseline, self.plan.target
        first = stage_suffix(self.config.team_leaders[0].name)

        def build():
            spec = self.config.team_leaders[0]
            keep = self.plan.cuts[spec.name].name if spec.transfer.keep == AUTO else None  # the cut its transfer chose
            model = build_baseline(self.config, self._load(f"leader{first}.keras"), target, keep)
            return model, self._fit("baseline", model, target, cfg.epochs, cfg.learning_rate, "baseline.learning_rate")

        self._stage("baseline", self.plan.stages["baseline"], build, "baseline.keras")

    def export_team(self, team_file: str, weights: dict[str, float] | None) -> None:
        """The team as deployment artefacts in ``export/``, each verified on validation data (`export_model`).

        `weights` are the ensemble weights the run's report uses (`ensemble_choice`).
        Any failure (a tolerance miss, a converter error, a full disk) is an
        `ExportFailed` naming the artefact; the artefacts verified before it are kept.
        """
        from keras_team.app.export import export_model, summary, verification_data

        if self.ws.done("export"):
            self.out.say(f"{'export':<11}done earlier")
            return
        cfg, target = self.config.export, self.plan.target
        self.out.stage("export", self.plan.stages["export"])
        team = self._load(team_file)
        split, examples, labels = verification_data(target)
        try:
            report = export_model(team, self.ws.path("export"), name=cfg.name, formats=cfg.formats,
                                  train_examples=target.images("train"), examples=examples, labels=labels,
                                  verified_on=split, version=1, force=True, seed=self.config.seed,
                                  class_names=target.class_names, weights=weights)  # the run owns its version 1
        except ExportFailed:
            raise
        except KerasTeamError as error:  # e.g. an op the converter lacks
            raise ExportFailed(f"export.formats ({error.field})", error.value, error.allowed) from error
        except OSError as error:  # e.g. a full disk
            raise ExportFailed("export", str(error.filename or self.ws.path("export")),
                               f"room to write the artefacts ({error.strerror}); free some space and run the "
                               "same command again") from error
        figures = summary(report)
        self.ws.finish("export", figures)
        for label, entry in figures.items():
            self.out.say(f"{'export':<11}{label} {entry['size_bytes'] / 1024:.0f} KiB, "
                         f"top-1 agreement {entry['top1_agreement']:.4f}: {entry['path']}")

    def run(self) -> dict:
        """Every stage in order; returns the report (also written to the run directory)."""
        return self.report(self.train())

    def train(self) -> str:
        """The training stages (every worker of a cluster runs them); returns the team's file."""
        for warning in self.plan.warnings:
            self.out.say(f"warning: {warning}")
        leaders = self.config.team_leaders
        for index in range(len(leaders)):
            self.train_leader(index)
        students = {spec.name: self.train_transfer(index) for index, spec in enumerate(leaders)}
        team_file = self.train_team(self.train_followers(students))
        self.train_baseline()
        return team_file

    def report(self, team_file: str) -> dict:
        """Evaluate, write the report, plots and `team.keras`, then export (if asked); returns the report.

        The export comes last, so that its failure (`ExportFailed`, carrying
        the report) leaves a finished run: a rerun redoes only the export.
        Only the chief of a cluster runs it.
        """
        from keras_team.app.report import ensemble_choice, evaluate_team, run_record, write_report  # matplotlib here only

        if self.ws.done("evaluate"):  # a rerun for the export alone: the report as it was written
            self.out.say(f"{'evaluate':<11}done earlier")
            report = read_json_mapping(self.ws.path("report.json"), "ensemble")
            if report is None:
                raise KerasTeamError("output_dir", str(self.ws.root), "a run directory whose report.json is whole "
                                     "(it is missing or damaged: rerun with --set overwrite=true)")
        else:
            team = self._load(team_file)
            choice = ensemble_choice(team, self.plan.target)  # one prediction of validation: the export's and report's weights
            self.out.stage("evaluate", self.plan.stages["evaluate"])
            report = evaluate_team(team, self.plan.target, baseline=self._load("baseline.keras"), choice=choice)
            report["stages"] = self.ws.state["stages"]
            report.update(run_record(self.config, self.plan))
            write_report(self.ws, report)
            with atomic_path(self.ws.path("team.keras")) as tmp:  # the final team, written by this stage only
                shutil.copyfile(self.ws.path(team_file), tmp)
            self.ws.finish("evaluate", {"ensemble_test_accuracy": report["ensemble"]["test_accuracy"]})
        if "export" in self.plan.stages:
            try:
                self.export_team(team_file, report["ensemble"].get("weights"))
            except ExportFailed as error:
                error.report = report
                raise
            report["stages"] = self.ws.state["stages"]
            write_text(self.ws.path("report.json"), json.dumps(report, indent=2, sort_keys=True))
        return report


class _StopOnNonFinite(keras.callbacks.Callback):
    """Stop `fit` after an epoch whose loss is NaN/inf (Keras' `TerminateOnNaN` checks every batch, which costs a sync each)."""

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite((logs or {}).get("loss", 0.0)):
            self.model.stop_training = True


def _from_epoch(train: tf.data.Dataset, epoch: int) -> tuple[tf.data.Dataset, int | None]:
    """`train` as one repeated stream of epochs from `epoch` on, and its batches per epoch.

    A dataset of unknown length (streamed) is returned as it is (None steps):
    its resumed epochs see other shuffles than an uninterrupted run's.

    Example:
        >>> def data():
        ...     return tf.data.Dataset.range(6).shuffle(6, seed=1).batch(3)   # 2 batches, reshuffled
        >>> whole, steps = _from_epoch(data(), 0)
        >>> rest, _ = _from_epoch(data(), 2)   # resumed after 2 epochs
        >>> batches = [b.numpy().tolist() for b in whole.take(6)]
        >>> steps, batches[4:] == [b.numpy().tolist() for b in rest.take(2)], batches[0] == batches[2]
        (2, True, False)
    """
    steps = int(train.cardinality())
    if steps <= 0:
        return train, None
    return train.repeat().skip(epoch * steps), steps


def _replicas(model: keras.Model) -> int:
    """How many replicas of the model's distribution strategy trained it."""
    return distribute.strategy_of(model).num_replicas_in_sync


def _last(history) -> dict:
    """The last epoch's validation figures of a `History`."""
    return {k: float(v[-1]) for k, v in history.history.items() if k.startswith("val_") and v}


def _accuracy(model: keras.Model, task: Task, split: str = "test") -> float:
    """`model`'s accuracy on `split`, the model called batch by batch: `predict` under several workers gathers each
    batch's outputs over them (a collective per batch, the slowest worker's pace) for a figure each computes alone."""
    inputs, labels = examples(task, [split])
    return float(np.mean(np.argmax(probe.features_of(model, inputs), axis=-1) == labels))


def _in_memory(task) -> bool:
    """Whether a task's splits are arrays (a streamed task trains its transfer uncached and its probe without copies)."""
    return isinstance(task, Task)


def _names(class_names, shown: int = 10) -> str:
    """The first `shown` class names, and how many there are in all when that is more.

    Example:
        >>> _names(["cat", "dog"]), _names([str(i) for i in range(100)], shown=3)
        ('cat, dog', '0, 1, 2, ... (100 in all)')
    """
    names = [str(name) for name in class_names]
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def _taps(tap: str | tuple[str, ...]) -> str:
    """A follower's tap(s) in words: `features`, `pool1 + pool2`."""
    return tap if isinstance(tap, str) else " + ".join(tap)


def _streamed(task: Task) -> str:
    """", streamed" for a task whose images are decoded as served (`data.stream`)."""
    return "" if isinstance(task, Task) else ", streamed"


def leader_paths(config: Config) -> dict[str, str]:
    """Config field -> path of every leader file the run reads (a run that replaces a directory must keep them)."""
    return {leader_field(config, i, "path"): spec.path for i, spec in enumerate(config.team_leaders) if spec.path}


def run(config: Config, *, output: Output | None = None) -> dict:
    """Run (or resume) the whole recipe of `config` in `config.output_dir`.

    The output directory and the plan are checked first; the directory is
    created (or a replaced run moved aside) only when both pass.

    Example (a run takes a minute; `keras-team run` calls this):
        $ python -c "from keras_team.app import config, recipe; recipe.run(config.load_config())"
    """
    if distribute.cluster() is not None:
        config.distribute.check_cluster()
        return run_in_cluster(config, output=output)
    workspace = Workspace.prepare(config.output_dir, config, reads=leader_paths(config))
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    cfg = config.distribute  # every stage builds, compiles and trains in the strategy's scope
    with distribute.choose_strategy(cfg.strategy).scope(), distribute.precision(cfg.precision):
        plan = make_plan(config)
        with workspace.start():
            return Recipe(config, workspace, plan, output=output).run()


def run_in_cluster(config: Config, *, output: Output | None = None) -> dict | None:
    """`run` as one worker of the cluster `TF_CONFIG` names; the chief returns the report, the others None.

    Every worker trains every stage under `MultiWorkerMirroredStrategy`
    (`keras_team.distribute.fit`). The chief alone opens `config.output_dir`
    and writes it: checkpoints, models, logs, then, out of the strategy,
    the export and the report. The others join it once the chief has opened it
    (`WorkerSpace`: they read it, and write only to a temporary folder they
    remove). A lost worker is a `KerasTeamError` on every other within about
    10 s (TensorFlow's heartbeats); the same command on every worker resumes.

    Example (on each of two machines, with its own index; a run takes a minute):
        $ keras-team run --config my.yaml --workers 10.0.0.1:2222,10.0.0.2:2222 --worker-index 0
    """
    here = distribute.cluster()
    with supervisor.joining(here.workers, here.index):  # `keras-team run` bounds this wait
        strategy = distribute.choose_strategy("multi_worker")  # first: it starts TensorFlow's runtime
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    with distribute.worker_failures(",".join(here.workers)):
        if not here.chief:
            if not distribute.agree(True, strategy):
                raise KerasTeamError("output_dir", config.output_dir, "a run directory the chief accepts (it stopped "
                                     "with an error: see its output)")
            workspace = WorkerSpace.join(config.output_dir, config)
            with workspace.start():
                _train_in(strategy, config, workspace, output)
            return None
        try:
            workspace = Workspace.prepare(config.output_dir, config, reads=leader_paths(config))
        except KerasTeamError:
            distribute.agree(False, strategy)  # the others stop too
            raise
        with workspace.start():
            distribute.agree(True, strategy)
            recipe, team_file = _train_in(strategy, config, workspace, output)
            return recipe.report(team_file)  # out of the strategy: the chief alone builds and writes


def _train_in(strategy, config: Config, workspace: Workspace, output: Output | None) -> tuple[Recipe, str]:
    with strategy.scope(), distribute.precision(config.distribute.precision):
        recipe = Recipe(config, workspace, make_plan(config), output=output)
        return recipe, recipe.train()
