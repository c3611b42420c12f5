"""`keras-team tune`: a KerasTuner search described by a keras-team config.

The config's `tune:` section gives the search space, the tuner and its
budget; `data:` and `leader:` give the tasks and the leader, as for
`keras-team run`. A search directory holds the leader it searched on
(`leader.keras`), KerasTuner's project (`search/`, with the feature cache),
`trials.csv` / `trials.json`, `score_by_cut.png` and `best_config.yaml`: the
config with the best trial's cut, head and rates in `transfer:` and the
searched leader in `leader.path`, ready for `keras-team run --config`.

Example:
    $ keras-team tune --config my.yaml --tuner bayesian --max-trials 20
    $ keras-team tune --config my.yaml --workers 2      # a chief and 2 workers on this machine
    $ keras-team run --config runs/digits-tune/best_config.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_team.app.config import Config, load_config
from keras_team.app.recipe import new_leader, is_pretrained, load_leader, load_tasks
from keras_team.app.workspace import check_writable
from keras_team.files import load_model
from keras_team.data import Task, examples, memory_budget, streams
from keras_team.errors import KerasTeamError
from keras_team.files import atomic_path, read_json_mapping, remove_temporaries, write_text
from keras_team.heads import LOSS
from keras_team.tuning import distributed
from keras_team.tuning.hypermodel import TransferHyperModel, epoch_split
from keras_team.tuning.search import best_settings, cap_per_class, make_tuner, trial_table, write_results

STATE = "tune_state.json"
CONFIG = "config.yaml"
BEST = "best_config.yaml"
LEADER = "leader.keras"
PROJECT = "search"
RUN_STATE = "state.json"  # a `keras-team run` directory: never replaced by a search
# Fields that say where or how to write, or how long to go on: a rerun may change them.
NOT_COMPARED = {"tune": ("output_dir", "overwrite", "max_trials", "oracle_ip", "oracle_port")}
# KerasTuner's own state files: a search resumes from them.
TUNER_STATE = ("oracle.json", "tuner*.json", "trial_*/trial.json", "trial_*/build_config.json")


def lock_path(root: pathlib.Path) -> pathlib.Path:
    """The lock file of a search directory: its sibling, so it survives the directory being moved aside or replaced.

    Example:
        >>> lock_path(pathlib.Path("runs/digits-tune"))
        PosixPath('runs/.digits-tune.tune-lock')
    """
    return root.with_name(f".{root.name}.tune-lock")


def _compared(config: Config) -> dict:
    data = config.to_dict()
    for section, keys in NOT_COMPARED.items():
        for key in keys:
            data[section].pop(key, None)
    return data


def _read_state(root: pathlib.Path) -> dict | None:
    """The search's state, or None when `root` holds no keras-team search."""
    return read_json_mapping(root / STATE, "config")


def _unreadable_tuner_state(project: pathlib.Path) -> str | None:
    """The first KerasTuner state file under `project` that is not whole JSON (a torn write), or None."""
    for pattern in TUNER_STATE:
        for path in sorted(project.glob(pattern)):
            try:
                json.loads(path.read_text())
            except (OSError, ValueError) as error:
                return f"{path.relative_to(project.parent)}: {type(error).__name__}"
    return None


class TuneJob:
    """One search directory: prepare it, run the chief/worker/single role, write the results.

    Opening the directory is two steps, as for a run (`keras_team.app.workspace`):
    `prepare` decides (new, resume or replace) and writes nothing; once every
    check of the search has passed, `start` moves a replaced search aside and
    writes the new one's config and state. The old search is deleted once the
    new one's tuner is built, just before its first trial.

    Example:
        >>> job = TuneJob(load_config(overrides=["tune.max_trials=2"]))
        >>> job.root, job.tune.max_trials         # job.run(workers=2): a chief and two workers
        (PosixPath('runs/digits-tune'), 2)
    """

    def __init__(self, config: Config):
        if config.leaders:
            raise KerasTeamError("leaders", [leader.name for leader in config.leaders],
                                 "[] for a search: tune searches the cut of one leader (leader:)")
        self.config = config
        self.tune = config.tune
        self.root = pathlib.Path(config.tune.output_dir)
        self.action = "new"
        self.rank_data = None  # with tune.space.top_k_cuts: the examples the cuts are ranked on
        self.streamed = False  # set by `data`: the search streams its examples (feature cache off)

    # --- the directory -------------------------------------------------------
    def prepare(self) -> None:
        """Decide what to do with the output directory; refuse a finished or foreign one. Writes nothing.

        A search may replace only a search (a finished one, or one of another
        config that has results, only with overwrite), never a run's or any
        other directory, nor one holding the leader the config reads.
        """
        check_writable(self.root, "tune.output_dir")
        if not self.root.exists() or not any(self.root.iterdir()):
            self.action = "new"
            return
        state = _read_state(self.root)
        if state is None:
            what = "a keras-team run" if (self.root / RUN_STATE).is_file() else "files that are not a keras-team search"
            raise KerasTeamError(
                "tune.output_dir", str(self.root), f"a new or empty directory, or a keras-team search's directory "
                f"(this one holds {what}; a search never replaces those, even with --overwrite)")
        if state["config"] == _compared(self.config) and not state.get("finished"):
            self.action = "resume"
            return
        has_results = (self.root / LEADER).exists() or any((self.root / PROJECT).glob("trial_*"))
        if (state.get("finished") or has_results) and not self.tune.overwrite:
            why = "a finished search" if state.get("finished") else "a search of another config"
            raise KerasTeamError(
                "tune.output_dir", str(self.root),
                f"a new directory: it holds {why}; choose another --output-dir or pass --overwrite to replace it",
            )
        leader = self.config.leader.path
        if leader and pathlib.Path(leader).resolve().is_relative_to(self.root.resolve()):
            raise KerasTeamError("leader.path", leader, f"a file outside {self.root}: replacing that search would "
                                 "delete it (copy it elsewhere first, or choose another --output-dir)")
        self.action = "replace"

    def start(self) -> None:
        """Create, resume or replace the search directory as `prepare` decided (the search's checks passed)."""
        if self.action == "resume":
            started = len(list((self.root / PROJECT).glob("trial_*")))
            print(f"resuming the search in {self.root}/ ({started} trials started)")
            for directory in [self.root, *(p for p in self.root.rglob("*") if p.is_dir())]:
                remove_temporaries(directory)  # what a killed writer left; never read as good
            self._set_aside_unreadable()
            return
        replaces = None
        if self.action == "replace":
            replaces = self.root.with_name(f".{self.root.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.root, replaces)
            print(f"keras-team: moved the previous search to {replaces}; it is deleted once this search "
                  "starts its first trial", flush=True)
        self.root.mkdir(parents=True, exist_ok=True)
        write_text(self.root / CONFIG, self.config.to_yaml())
        self._save_state(finished=False, **({"replaces": str(replaces)} if replaces else {}))

    def _set_aside_unreadable(self) -> None:
        """A KerasTuner state file that is not whole (torn by a kill or a full disk on a writer that wrote in
        place) cannot be resumed: move the KerasTuner project aside, say so in one line, and search again."""
        project = self.root / PROJECT
        problem = _unreadable_tuner_state(project)
        if problem is None:
            return
        aside = self.root / f"{PROJECT}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(project, aside)
        print(f"keras-team: set aside the search's trials in {aside} ({problem} is not whole); "
              "the search starts again", flush=True)

    def _delete_replaced(self) -> None:
        state = _read_state(self.root) or {}
        replaced = state.pop("replaces", None)
        if replaced:
            if pathlib.Path(replaced).exists():
                shutil.rmtree(replaced)
            write_text(self.root / STATE, json.dumps(state, indent=2))

    def _save_state(self, *, finished: bool, **figures) -> None:
        state = {"config": _compared(self.config), "finished": finished, **figures}
        write_text(self.root / STATE, json.dumps(state, indent=2))

    # --- leader, data, tuner ---------------------------------------------------
    def leader(self, source) -> keras.Model:
        """The config's leader.path, else the config's leader built as `keras-team run` builds it (an
        application's ImageNet weights, or trained on the source once), saved in the search directory."""
        if self.config.leader.path:
            return load_leader(self.config.leader.path, source)
        saved = self.root / LEADER
        if saved.is_file():
            return load_model(saved, compile=False, field="tune.output_dir")
        if distributed.role() == "worker":
            raise KerasTeamError("leader.path", None, f"a trained leader for a worker: set leader.path, or start "
                                 f"the chief first (it writes {saved} in the shared directory)")
        cfg = self.config.leader
        if is_pretrained(cfg):  # an application with its ImageNet weights: nothing to train on the source
            leader = new_leader(self.config, 0, source)  # built as `keras-team run` builds it
        else:
            print(f"== training the leader ({cfg.application or cfg.architecture}) on {source.name}, "
                  f"{cfg.epochs} epochs", flush=True)
            keras.utils.set_random_seed(self.config.seed)
            leader = new_leader(self.config, 0, source)
            leader.compile(keras.optimizers.Adam(cfg.learning_rate), LOSS, metrics=["accuracy"])
            leader.fit(source.dataset("train", training=True), validation_data=source.dataset("validation"),
                       epochs=cfg.epochs, verbose=0, shuffle=False)
        with atomic_path(saved) as tmp:
            leader.save(tmp)
        return leader

    def data(self, target) -> tuple[tuple, tuple | tf.data.Dataset, dict]:
        """Training data (arrays, or a pipeline: augmented or streamed), the capped validation data, their sizes.

        The feature cache needs arrays. A streamed task (`data.stream`) is
        read into them only with `data.stream: auto` and when its training
        and capped validation images fit the budget `auto` streams above
        (`keras_team.data.memory_budget`); else the search streams them too,
        with the cache off. Sets `rank_data` for `tune.space.top_k_cuts`:
        the training and capped validation examples.
        """
        y, y_val = target.labels("train"), target.labels("validation")
        keep, y_capped = cap_per_class(np.arange(len(y_val)), y_val, self.tune.validation_per_class, seed=self.config.seed)
        sizes = {"train_examples": len(y), "validation_examples": len(keep),
                 "validation_available": len(y_val), "validation_per_class": self.tune.validation_per_class}
        decoded = (len(y) + len(keep)) * math.prod(target.input_shape)
        self.streamed = not isinstance(target, Task) and streams(self.config.data.stream, decoded)
        if self.streamed:
            print(f"search data: streamed (data.stream={str(self.config.data.stream).lower()}; {decoded / 2**20:,.0f} "
                  f"MB decoded, budget {memory_budget() / 2**20:,.0f} MB): the feature cache needs arrays, so it is "
                  "OFF for this search and every epoch decodes the images and runs the frozen layers", flush=True)
            labels = tf.data.Dataset.from_tensor_slices(y_capped)
            validation = tf.data.Dataset.zip(_inputs_at(target, "validation", keep), labels).batch(target.batch_size)
            if self.tune.space.top_k_cuts:
                inputs = examples(target, ["train"])[0].unbatch().concatenate(_inputs_at(target, "validation", keep))
                inputs = inputs.apply(tf.data.experimental.assert_cardinality(len(y) + len(keep)))  # Keras knows the end
                self.rank_data = (inputs.batch(128), np.concatenate([y, y_capped]))
            return (target.dataset("train", training=True), None), validation, sizes
        if not isinstance(target, Task):
            print(f"search data: the streamed task's training and capped validation images ({decoded / 2**20:,.0f} MB "
                  f"decoded) are read into memory for the feature cache (within data.stream=auto's budget of "
                  f"{memory_budget() / 2**20:,.0f} MB)", flush=True)
        x, x_val = target.images("train"), _decoded(target, "validation", keep)
        if self.tune.space.top_k_cuts:  # the advisor reads the examples the search reads, never the test split
            self.rank_data = (np.concatenate([x, x_val]), np.concatenate([y, y_capped]))
        train = (target.dataset("train", training=True), None) if target.augment else (x, y)
        return train, (x_val, y_capped), sizes

    def hypermodel(self, leader: keras.Model, rank_data: tuple | None = None) -> TransferHyperModel:
        """The configured search space on `leader`; errors name the `tune.space` field.

        With `tune.space.top_k_cuts`, the cuts are ranked on `rank_data` (the
        search's training and validation examples); without it, nothing is
        ranked (the checks before the search).
        """
        space = self.tune.space
        top_k = space.top_k_cuts if rank_data is not None else None
        try:
            return TransferHyperModel(
                leader, self.num_classes, cuts=space.cuts, top_k_cuts=top_k, rank_data=rank_data if top_k else None,
                head_layers=space.head_layers,
                head_units=space.head_units, dropout=space.dropout, learning_rate=space.learning_rate,
                max_unfreeze=space.max_unfreeze, fine_tune_learning_rate=space.fine_tune_learning_rate,
                fine_tune_fraction=space.fine_tune_fraction, seed=self.config.seed,
            )
        except KerasTeamError as error:
            field = "leader" if error.field == "leader" else f"tune.space.{error.field}"
            raise KerasTeamError(field, error.value, error.allowed) from error

    def tuner(self, leader: keras.Model):
        """The configured KerasTuner tuner over the configured search space."""
        hypermodel = self.hypermodel(leader, self.rank_data)
        if hypermodel.cut_ranking:
            kept = {c.name for c in hypermodel.cuts}
            print(f"cut advisor: searching the top {len(kept)} of {len(hypermodel.cut_ranking)} cuts by leave-one-out "
                  "nearest-class-mean accuracy on the search's training and validation examples: "
                  + ", ".join(f"{s.cut.name} {s.score:.3f}{'' if s.cut.name in kept else ' (left out)'}"
                              for s in hypermodel.cut_ranking)
                  + f" ({sum(s.seconds for s in hypermodel.cut_ranking):.1f} s)", flush=True)
        tuner = make_tuner(hypermodel, tuner=self.tune.tuner, objective=self.tune.objective,
                           max_trials=self.tune.max_trials, max_epochs=self.tune.epochs,
                           directory=self.root, project_name=PROJECT, seed=self.config.seed)
        if distributed.role() != "worker":
            self._delete_replaced()  # the new search is ready to run its first trial
        return tuner

    # --- running -------------------------------------------------------------
    def run(self, *, workers: int = 0) -> dict | None:
        """Run this process's part of the search; the chief (or a single process) writes the results.

        Returns the best settings, or None on a worker.
        """
        role = distributed.role()
        if workers and role:
            raise KerasTeamError("--workers", workers, f"0 when {distributed.TUNER_ID} is set (this process is a {role})")
        if role == "worker":  # the chief holds the directory
            return self._run(workers, role)
        check_writable(self.root, "tune.output_dir")
        with self._locked():
            return self._run(workers, role)

    @contextlib.contextmanager
    def _locked(self):
        """Hold the search directory's lock (`lock_path`) while the block runs: one chief per directory.

        An OS lock (`flock`) on a file next to the directory, so a killed
        chief's lock goes with its process and never blocks the rerun; the
        file names the process holding it.
        """
        path = lock_path(self.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(handle, 32, 0).decode(errors="replace").strip()
                raise KerasTeamError(
                    "tune.output_dir", str(self.root), f"a directory no other search is using "
                    f"({f'process {pid}' if pid else 'another process'} is running a search in it: wait for it "
                    "to end, or choose another --output-dir)") from None
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(handle)  # closing releases the lock

    def _run(self, workers: int, role: str | None) -> dict | None:
        source, target = load_tasks(self.config)
        self.num_classes = target.num_classes
        # Every check before anything is written or trained: a rejected search leaves the directory as it was.
        leader = load_leader(self.config.leader.path, source) if self.config.leader.path else None
        self.hypermodel(leader or new_leader(self.config, 0, source, pretrained=False))
        if workers and self.tune.oracle_port:
            distributed.check_port(self.tune.oracle_ip, self.tune.oracle_port, "tune.oracle_port")
        elif role == "chief":
            distributed.check_port(os.environ[distributed.ORACLE_IP], int(os.environ[distributed.ORACLE_PORT]),
                                   distributed.ORACLE_PORT)
        if role != "worker":
            self.prepare()
            self.start()
        leader = leader or self.leader(source)
        (x, y), validation, sizes = self.data(target)
        if target.augment and not self.streamed:
            print(f"augmentation configured ({', '.join(target.augment)}): feature cache OFF for this search, "
                  "every epoch runs the frozen layers on augmented images", flush=True)
        print(f"search data: {sizes['train_examples']} training examples, {sizes['validation_examples']} validation "
              f"examples (of {sizes['validation_available']}; cap per class: {sizes['validation_per_class']}); "
              "the test split is never read", flush=True)
        fit = dict(validation_data=validation, epochs=self.tune.epochs, verbose=0)
        if y is not None:
            fit["batch_size"] = self.config.data.batch_size
        start = time.perf_counter()
        if workers:
            tuner = self._chief_with_local_workers(leader, workers)
        elif role == "chief":
            tuner = self.tuner(leader)
            distributed.serve(tuner)
        else:
            tuner = self.tuner(leader)
            tuner.search(x, y, **fit)
            if role == "worker":
                return None
        return self.finish(tuner, {**sizes, "tuner": self.tune.tuner, "workers": workers,
                                   "feature_cache": "off (streamed)" if self.streamed
                                   else "off (augmentation)" if target.augment else "on",
                                   "seconds": round(time.perf_counter() - start, 1)})

    def _chief_with_local_workers(self, leader: keras.Model, workers: int):
        ip = self.tune.oracle_ip
        port = self.tune.oracle_port or distributed.free_port(ip)
        command = [sys.executable, "-m", "keras_team_cli", "tune", "--config", str(self.root / CONFIG)]
        print(f"== distributed search: chief (oracle at {ip}:{port}) and {workers} workers on this machine, the cores dealt out among them", flush=True)
        processes = []
        for i, cores in enumerate(distributed.worker_cores(workers)):  # the cores dealt out: no two workers share one
            processes.append(subprocess.Popen(command, env=distributed.worker_env(i, ip, port)))
            if cores:
                os.sched_setaffinity(processes[-1].pid, cores)
        try:
            with distributed.chief_env(ip, port):
                tuner = self.tuner(leader)
                distributed.serve(tuner, alive=lambda: any(p.poll() is None for p in processes))
            failed = [code for code in (p.wait() for p in processes) if code]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
        if failed:
            raise KerasTeamError("workers", failed, "exit status 0 from every worker (see their output above)")
        return tuner  # the chief's oracle holds every trial the workers reported

    def finish(self, tuner, figures: dict) -> dict:
        """Write the trial table, the plot and the best config (once); mark the search finished."""
        rows = trial_table(tuner)
        if tuner.hypermodel.cut_ranking:
            searched = {c.name for c in tuner.hypermodel.cuts}
            figures = {**figures, "cut_ranking": [
                {"cut": s.cut.name, "score": round(s.score, 4), "seconds": round(s.seconds, 3),
                 "searched": s.cut.name in searched} for s in tuner.hypermodel.cut_ranking]}
        best = best_settings(tuner)
        try:
            write_results(tuner, self.root, extra=figures)
            write_text(self.root / BEST, self.best_config(best).to_yaml())
        except OSError as error:  # a full disk, say: every trial is on disk, only these files are missing
            raise KerasTeamError("tune.output_dir", str(self.root), f"room for the search's results: writing them "
                                 f"failed ({error.strerror or error}); its {len(rows)} trials are kept, and the same "
                                 f"command writes {BEST} without training again") from error
        self._save_state(finished=True, trials=len(rows), best=best)
        return best

    def best_config(self, best: dict) -> Config:
        """The config with the best trial's cut, head and rates in `transfer`, reading the searched leader."""
        data = self.config.to_dict()
        split = epoch_split(0, self.tune.epochs, best["unfreeze"], self.tune.space.fine_tune_fraction)
        data["transfer"].update(
            keep=best["cut"],
            head={**data["transfer"]["head"], "kind": "dense",
                  "hidden": [best["head_units"]] * best["head_layers"], "dropout": best["dropout"]},
            epochs=split,
            learning_rate=best["learning_rate"],
            unfreeze=best["unfreeze"],
            fine_tune_epochs=self.tune.epochs - split,
        )
        if best["fine_tune_learning_rate"]:
            data["transfer"]["fine_tune_learning_rate"] = best["fine_tune_learning_rate"]
        if not self.config.leader.path:  # the searched leader, saved: it is no longer built from its description
            data["leader"].update(path=str((self.root / LEADER).resolve()), application=None, input_shape=None)
        return Config.from_dict(data)


def _decoded(target, split: str, positions: np.ndarray) -> np.ndarray:
    """The inputs of `split` at `positions` (sorted) as one array; a streamed task's read, only those kept."""
    if isinstance(target, Task):
        return target.images(split)[positions]
    return np.concatenate(list(_inputs_at(target, split, positions).batch(256).as_numpy_iterator()))


def _inputs_at(target, split: str, positions: np.ndarray) -> tf.data.Dataset:
    """The unbatched inputs of a streamed task's `split` at `positions` (sorted), read in order: only those kept."""
    wanted = np.zeros(len(target.labels(split)), bool)
    wanted[positions] = True
    wanted = tf.constant(wanted)

    def kept(index, image):
        return wanted[index]

    def image_of(index, image):
        return image

    inputs = examples(target, [split])[0].unbatch().enumerate().filter(kept).map(image_of)
    return inputs.apply(tf.data.experimental.assert_cardinality(len(positions)))


def handle(args: argparse.Namespace) -> None:
    """Run `keras-team tune` (or this process's part of a distributed search); errors are `KerasTeamError`s."""
    overrides = list(args.set)
    for field, value in (("output_dir", args.output_dir), ("tuner", args.tuner), ("max_trials", args.max_trials)):
        if value is not None:
            overrides.append(f"tune.{field}={value}")
    if args.overwrite:
        overrides.append("tune.overwrite=true")
    most = distributed.max_local_workers()
    if not 0 <= args.workers <= most:
        raise KerasTeamError("--workers", args.workers, f"an int from 0 to {most} (the CPU cores this process may use: "
                             "each worker is a TensorFlow process of its own)")
    job = TuneJob(load_config(args.config, overrides))
    with contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext():  # only the result
        best = job.run(workers=args.workers)
    if best is None:  # a worker: the chief writes the results
        return
    print(f"\nbest: {best}")
    print(f"trials.csv, trials.json, score_by_cut.png and {BEST} in {job.root}/")
    print(f"train it: keras-team run --config {job.root / BEST}")
