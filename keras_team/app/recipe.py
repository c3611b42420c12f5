"""The staged recipe behind `keras-team run`: each stage one `model.fit`.

Stages, in order: ``leader`` (train on the source task, or load a given
`.keras` leader), ``transfer`` (train a new head on the frozen cut),
``fine_tune`` (optional: unfreeze the top k kept layers at a low rate),
``followers`` (each on cached taps of the frozen leader), ``team`` (optional
joint fine-tuning), ``baseline`` (the same architecture trained from scratch
on the target alone) and ``evaluate`` (member by member and as an ensemble).

Every stage saves its model atomically and is recorded in the run's
`state.json`; a rerun skips finished stages and an interrupted stage
continues from its last epoch (`keras.callbacks.BackupAndRestore`).

Example:
    >>> report = run(load_config(overrides=["leader.epochs=2"]))   # doctest: +SKIP
    >>> report["ensemble"]["test_accuracy"]                         # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_team import distribute, heads, zoo
from keras_team.caching import fit_follower
from keras_team.app.config import Config, DataConfig, TransferConfig, stage_suffix
from keras_team.cuts import resolve_cut
from keras_team.data import Task, load_task
from keras_team.errors import KerasTeamError
from keras_team.followers import Distill, Follower
from keras_team.freezing import unfreeze
from keras_team.team import Team
from keras_team.transfers import transfer
from keras_team.app.workspace import Workspace

ARCHITECTURES = {"seed_cnn": zoo.seed_cnn, "residual_cnn": zoo.residual_cnn}
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def banner(text: str) -> None:
    """One line announcing a stage."""
    print(f"\n== {text}", flush=True)


def config_field(task: str, field: str) -> str:
    """The config path of a field the data module names: `shots` of the target is `data.target.shots`.

    Example:
        >>> config_field("target", "shots"), config_field("source", "validation")
        ('data.target.shots', 'data.validation')
    """
    leaf = field.rsplit(".", 1)[-1]
    if leaf in ("name", "classes", "shots"):
        return f"data.{task}.{leaf}"
    return f"data.{leaf}" if leaf in DataConfig.model_fields else field


def _load_task(config: Config, task: str, **kwargs) -> Task:
    data, spec = config.data, getattr(config.data, task)
    try:
        return load_task(spec.name, classes=spec.classes, shots=spec.shots, seed=config.seed,
                         batch_size=data.batch_size, validation=data.validation, data_dir=data.data_dir,
                         download=data.download, **kwargs)
    except KerasTeamError as error:
        raise KerasTeamError(config_field(task, error.field), error.value, error.allowed) from error


def load_tasks(config: Config) -> tuple[Task, Task]:
    """The source and target tasks the config names; errors name the full config field."""
    data = config.data
    source = _load_task(config, "source")
    target = _load_task(config, "target", augment=data.augment)
    if source.input_shape != target.input_shape:
        raise KerasTeamError("data.target.name", data.target.name,
                             f"images shaped like the source's {source.input_shape}, got {target.input_shape}")
    return source, target


def _head(spec: TransferConfig, num_classes: int) -> keras.layers.Layer:
    head = spec.head
    if head.kind == "conv":
        return heads.conv(num_classes, filters=head.hidden or (64,), dropout=head.dropout, activation=head.activation)
    return heads.dense(num_classes, hidden=head.hidden, dropout=head.dropout, activation=head.activation)


def check_keep(leader: keras.Model, keep: int | str, field: str = "transfer.keep") -> None:
    """Raise `KerasTeamError` on `field` unless `keep` is a valid cut of `leader`."""
    try:
        resolve_cut(leader, keep)
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
    return field if field.startswith("transfer.") else f"leader.{field}"


def _load_leader(path: str, task: Task, field: str = "leader.path") -> keras.Model:
    try:
        leader = keras.models.load_model(path)
    except Exception as error:  # Keras raises many types for unreadable or corrupt files
        raise KerasTeamError(field, path, f"a readable Keras .keras model ({type(error).__name__}: {error})") from error
    expected = (None, *task.input_shape)
    if tuple(leader.inputs[0].shape) != expected:
        raise KerasTeamError(field, path, f"a leader taking inputs of shape {expected}, got {tuple(leader.inputs[0].shape)}")
    return leader


def _replicas(model: keras.Model) -> int:
    """How many replicas of the model's distribution strategy trained it."""
    return model.distribute_strategy.num_replicas_in_sync


class Recipe:
    """Runs the stages of one config in one workspace.

    Example:
        >>> Recipe(config, Workspace.open(config.output_dir, config)).run()   # doctest: +SKIP
    """

    def __init__(self, config: Config, workspace: Workspace, *, verbose: int | None = None):
        self.config = config
        self.ws = workspace
        self.verbose = verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)

    # --- helpers ---------------------------------------------------------
    def _callbacks(self, stage: str) -> list:
        logs = self.ws.path("logs")
        logs.mkdir(parents=True, exist_ok=True)
        return [
            keras.callbacks.BackupAndRestore(str(self.ws.backup_dir(stage))),
            keras.callbacks.CSVLogger(str(logs / f"{stage}.csv"), append=True),
            keras.callbacks.TensorBoard(str(logs / "tensorboard" / stage), write_graph=False),
        ]

    def _compile_options(self) -> dict:
        cfg = self.config.distribute
        return {"jit_compile": cfg.jit_compile, "steps_per_execution": cfg.steps_per_execution}

    def _fit(self, stage: str, model: keras.Model, task: Task, epochs: int, learning_rate: float) -> dict:
        model.compile(keras.optimizers.Adam(learning_rate), LOSS, metrics=["accuracy"], **self._compile_options())
        start = time.perf_counter()
        model.fit(task.dataset("train", training=True), validation_data=task.dataset("validation"),
                  epochs=epochs, callbacks=self._callbacks(stage), verbose=self.verbose,
                  shuffle=False)  # the training dataset shuffles itself, seeded
        return {"seconds": time.perf_counter() - start, "replicas": _replicas(model)}

    def _stage(self, stage: str, description: str, build, output: str):
        """Run `build()` unless `stage` is done; either way return the model saved as `output`."""
        if self.ws.done(stage):
            print(f"== {stage}: done earlier, loading {output}", flush=True)
            return keras.models.load_model(self.ws.path(output))
        banner(f"{stage}: {description}")
        model, figures = build()
        self.ws.save_model(model, output)
        self.ws.finish(stage, figures)
        return model

    # --- stages ----------------------------------------------------------
    def train_leader(self, index: int, source: Task) -> keras.Model:
        """Train (or load) the `index`-th leader on the source task."""
        cfg = self.config.team_leaders[index]
        suffix = stage_suffix(cfg.name)

        def build():
            if cfg.path:
                leader = _load_leader(cfg.path, source, leader_field(self.config, index, "path"))
                check_keep(leader, cfg.transfer.keep, leader_field(self.config, index, "transfer.keep"))
                return leader, {"seconds": 0.0, "loaded_from": cfg.path}
            leader = ARCHITECTURES[cfg.architecture](source.input_shape, source.num_classes, name=cfg.name)
            figures = self._fit(f"leader{suffix}", leader, source, cfg.epochs, cfg.learning_rate)
            figures["source_test_accuracy"] = self._accuracy(leader, source)
            return leader, figures

        what = f"load {cfg.path}" if cfg.path else f"train {cfg.architecture} on {source.name} ({source.num_classes} classes)"
        return self._stage(f"leader{suffix}", f"{cfg.name}: {what}" if suffix else what, build, f"leader{suffix}.keras")

    def train_transfer(self, index: int, leader: keras.Model, target: Task) -> keras.Model:
        """Cut, freeze and put a new head on the `index`-th leader; optionally fine-tune."""
        name = self.config.team_leaders[index].name
        cfg, suffix = self.config.team_leaders[index].transfer, stage_suffix(name)
        said = f"{name}: " if suffix else ""

        def build():
            model = transfer(leader, cfg.keep, _head(cfg, target.num_classes), name=f"transfer{suffix}")
            return model, self._fit(f"transfer{suffix}", model, target, cfg.epochs, cfg.learning_rate)

        model = self._stage(f"transfer{suffix}", f"{said}keep {cfg.keep!r} of the leader, frozen; train a new head",
                            build, f"stages/transfer{suffix}.keras")
        if not cfg.unfreeze or not cfg.fine_tune_epochs:
            return model

        def fine_tune():
            unfreeze(model, top=cfg.unfreeze)
            return model, self._fit(f"fine_tune{suffix}", model, target, cfg.fine_tune_epochs,
                                    cfg.fine_tune_learning_rate)

        return self._stage(f"fine_tune{suffix}", f"{said}unfreeze the top {cfg.unfreeze} kept layers, fine-tune",
                           fine_tune, f"stages/fine_tune{suffix}.keras")

    def train_followers(self, students: dict[str, keras.Model], target: Task) -> Team:
        """Each follower on cached taps of the frozen leaders it reads; the team of them all."""
        cfgs = self.config.followers

        def build():
            followers = [
                Follower(zoo.mlp(target.num_classes, hidden=f.hidden, dropout=f.dropout, name=f.name),
                         tap=f.tap, temperature=f.temperature, leaders=f.leaders, combine=f.combine,
                         distill=Distill(f.distill.temperature, f.distill.alpha) if f.distill else None)
                for f in cfgs
            ]
            team = Team(students, followers)
            figures = {}
            for f in cfgs:
                read = f"{', '.join(f.leaders or students)}" if len(students) > 1 else "the leader"
                print(f"-- follower {f.name!r} on {read}'s {f.tap!r} (taps cached)", flush=True)
                start = time.perf_counter()
                fit_follower(team, f.name, target.dataset("train"), target.dataset("validation"),
                             epochs=f.epochs, optimizer=keras.optimizers.Adam(f.learning_rate),
                             batch_size=target.batch_size, seed=self.config.seed,
                             callbacks=self._callbacks(f"follower_{f.name}"), verbose=self.verbose)
                figures[f.name] = {"seconds": time.perf_counter() - start,
                                   "replicas": _replicas(team.follower_graphs[f.name])}
            return team, figures

        whose = "leader's" if len(students) == 1 else f"{len(students)} leaders'"
        return self._stage("followers", f"{len(cfgs)} follower(s) on the frozen {whose} taps", build, "team.keras")

    def train_team(self, team: Team, target: Task) -> Team:
        cfg = self.config.team
        if not cfg.epochs:
            return team

        def build():
            team.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), **self._compile_options())
            start = time.perf_counter()
            team.fit(target.dataset("train", training=True), validation_data=target.dataset("validation"),
                     epochs=cfg.epochs, callbacks=self._callbacks("team"), verbose=self.verbose, shuffle=False)
            return team, {"seconds": time.perf_counter() - start, "replicas": _replicas(team)}

        return self._stage("team", "joint fine-tuning of the team (summed member losses)", build, "team.keras")

    def train_baseline(self, leader: keras.Model, target: Task) -> keras.Model:
        """The first leader's architecture, cut and head, from scratch on the target alone."""
        cfg, spec = self.config.baseline, self.config.team_leaders[0].transfer

        def build():
            scratch = keras.models.clone_model(leader)  # the leader's architecture, freshly initialised
            model = transfer(scratch, spec.keep, _head(spec, target.num_classes), freeze=False, name="baseline")
            return model, self._fit("baseline", model, target, cfg.epochs, cfg.learning_rate)

        return self._stage("baseline", "the same architecture from scratch on the target alone",
                           build, "baseline.keras")

    @staticmethod
    def _accuracy(model: keras.Model, task: Task, split: str = "test") -> float:
        x, y = task.splits[split]
        return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))

    def run(self) -> dict:
        """Every stage in order, in the config's strategy and precision; returns the report."""
        cfg = self.config.distribute
        with distribute.choose_strategy(cfg.strategy).scope(), distribute.precision(cfg.precision):
            return self._run_stages()

    def _run_stages(self) -> dict:
        from keras_team.app.report import evaluate_team, write_report  # matplotlib only when reporting

        source, target = load_tasks(self.config)
        leaders_config = self.config.team_leaders
        for index, cfg in enumerate(leaders_config):  # a bad cut fails now, not after a leader trained
            if not cfg.path:
                architecture = ARCHITECTURES[cfg.architecture]
                check_keep(architecture(source.input_shape, source.num_classes), cfg.transfer.keep,
                           leader_field(self.config, index, "transfer.keep"))
        keras.utils.set_random_seed(self.config.seed)
        if self.config.deterministic:
            tf.config.experimental.enable_op_determinism()
        leaders = [self.train_leader(index, source) for index in range(len(leaders_config))]
        students = {cfg.name: self.train_transfer(index, leader, target)
                    for index, (cfg, leader) in enumerate(zip(leaders_config, leaders))}
        team = self.train_team(self.train_followers(students, target), target)
        baseline = self.train_baseline(leaders[0], target)
        banner("evaluate: members, team ensemble and scratch baseline on the target test set")
        report = evaluate_team(team, target, baseline=baseline)
        report["stages"] = self.ws.state["stages"]
        write_report(self.ws, report)
        self.ws.finish("evaluate", {"ensemble_test_accuracy": report["ensemble"]["test_accuracy"]})
        return report


def run(config: Config, *, verbose: int | None = None) -> dict:
    """Run (or resume) the whole recipe of `config` in `config.output_dir`.

    Example:
        >>> report = run(load_config(overrides=["output_dir=/tmp/run"]))  # doctest: +SKIP
    """
    return Recipe(config, Workspace.open(config.output_dir, config), verbose=verbose).run()
