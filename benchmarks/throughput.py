"""Team training throughput (examples/s): Keras variants vs the write-up's PyTorch loop.

The team is the write-up's CIFAR-10 -> CIFAR-100 one on CIFAR-shaped inputs
(32x32x3 uint8, random pixels: throughput does not depend on the values):
`keras_team.zoo.seed_cnn` cut after conv1, conv2, fc1 (frozen), a new linear
head of 100 logits, and an MLP follower (50 hidden units) on the fc1
features; loss = sum of both members' cross-entropies, Adam. The PyTorch
reference is the same team in the write-up's style of loop (frozen part
under `no_grad` in eval mode, `loss.backward()`, `optimizer.step()`),
counting accuracy as Keras' default metrics do.

Keras variants, default strategy: `Team.fit` as compiled by default, with
`steps_per_execution=10`, with `jit_compile=True`, and both. Each batch size
builds every variant, runs one warm-up epoch each (tracing), then `--repeats`
rounds in which every variant trains one epoch in turn (so a burst of other
load hits all of them alike); the median epoch counts. The machine's load
average is recorded with the figures.

torch is an optional benchmark extra (`pip install torch`), never a
dependency of keras-team; without it only the Keras variants run. torch
gets as many compute threads as TensorFlow's intra-op pool. Run it on a
quiet machine (load average below 1): torch's threads busy-wait, so under
load its figures fall apart first.

Run from the repository root:

    python benchmarks/throughput.py        # writes benchmarks/results/throughput.json
    python benchmarks/throughput.py --examples 2000 --repeats 3 --batch-sizes 100
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import keras_team  # noqa: E402
from _common import RESULTS, load_average, machine, write_json  # noqa: E402

SHAPE, SOURCE_CLASSES, TARGET_CLASSES = (32, 32, 3), 10, 100
VARIANTS = {
    "keras_default": {},
    "keras_steps_per_execution_10": {"steps_per_execution": 10},
    "keras_jit_compile": {"jit_compile": True},
    "keras_jit_compile_steps_per_execution_10": {"jit_compile": True, "steps_per_execution": 10},
}


def keras_team_model(**compile_options) -> keras_team.Team:
    """The write-up's team in keras-team, compiled with `compile_options`."""
    keras.utils.set_random_seed(0)
    leader = keras_team.zoo.seed_cnn(SHAPE, SOURCE_CLASSES)
    student = keras_team.transfer(leader, keep=3, head=keras_team.heads.dense(TARGET_CLASSES))
    team = keras_team.Team({"leader": student}, [keras_team.Follower(keras_team.zoo.mlp(TARGET_CLASSES, hidden=(50,)))])
    team.compile(optimizer=keras.optimizers.Adam(1e-3), **compile_options)
    return team


class TorchTeam:
    """The same team as a PyTorch loop, as the write-up trains it."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int):
        import torch
        from torch import nn

        self.torch = torch
        torch.manual_seed(0)
        self.body = nn.Sequential(  # conv1, pool, conv2, pool, fc1: kept and frozen
            nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        ).eval()
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.head = nn.Linear(120, TARGET_CLASSES)
        self.follower = nn.Sequential(nn.Linear(120, 50), nn.ReLU(), nn.Linear(50, TARGET_CLASSES))
        self.loss = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.Adam([*self.head.parameters(), *self.follower.parameters()], lr=1e-3)
        self.x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW, scaled per batch
        self.y = torch.from_numpy(y.astype(np.int64))
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(0)

    def epoch(self) -> None:
        torch = self.torch
        order = torch.randperm(len(self.y), generator=self.generator)
        correct = 0
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x, y = self.x[idx].float() / 255, self.y[idx]
            with torch.no_grad():
                features = self.body(x)
            head_logits, follower_logits = self.head(features), self.follower(features)
            loss = self.loss(head_logits, y) + self.loss(follower_logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            correct += int((head_logits.argmax(1) == y).sum()) + int((follower_logits.argmax(1) == y).sum())


def measure(batch_size: int, x: np.ndarray, y: np.ndarray, repeats: int, with_torch: bool) -> dict:
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=0).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    runners = {}
    for name, options in VARIANTS.items():
        team = keras_team_model(**options)
        runners[name] = lambda team=team: team.fit(data, epochs=1, verbose=0, shuffle=False)
    if with_torch:
        runners["torch_loop"] = TorchTeam(x, y, batch_size).epoch
    for run in runners.values():  # warm-up: tracing, XLA compilation, allocator
        run()
    seconds = {name: [] for name in runners}
    load = []
    for _ in range(repeats):
        load.append(os.getloadavg()[0])
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    figures = {
        name: {"examples_per_s": len(y) / statistics.median(times), "epoch_seconds": [round(t, 3) for t in times]}
        for name, times in seconds.items()
    }
    reference = figures.get("torch_loop", figures["keras_default"])["examples_per_s"]
    for name, fig in figures.items():
        fig["vs_torch_loop" if with_torch else "vs_keras_default"] = round(fig["examples_per_s"] / reference, 3)
        fig["examples_per_s"] = round(fig["examples_per_s"], 1)
    return {"variants": figures, "load_average_1min_per_round": load}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4000, help="examples per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per variant (median counts)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 100, 256])
    parser.add_argument("--output", default=str(RESULTS / "throughput.json"))
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    intra_op_threads = tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))
    if torch is not None:  # the same number of compute threads as TensorFlow's intra-op pool (0 there = every core)
        torch.set_num_threads(intra_op_threads)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.examples, *SHAPE), dtype=np.uint8)
    y = rng.integers(0, TARGET_CLASSES, args.examples).astype(np.int32)
    started, load_before = time.time(), load_average()
    result = {
        "what": "team training throughput, examples/s (median epoch), CIFAR-shaped inputs; ratios vs the PyTorch loop",
        "device": "CPU",
        "torch": torch.__version__ if torch else None,
        "compute_threads": {"tensorflow_intra_op": intra_op_threads, "torch": torch.get_num_threads() if torch else None},
        "examples_per_epoch": args.examples,
        "repeats": args.repeats,
        "batch_sizes": {},
    }
    for batch_size in args.batch_sizes:
        result["batch_sizes"][str(batch_size)] = measure(batch_size, x, y, args.repeats, torch is not None)
        print(batch_size, json.dumps(result["batch_sizes"][str(batch_size)]["variants"]), flush=True)
    result["machine"] = machine(load_before)
    result["seconds"] = round(time.time() - started, 1)
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
