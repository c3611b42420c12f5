"""Team training throughput (examples/s): Keras variants vs the write-up's PyTorch loop.

The team is the write-up's CIFAR-10 -> CIFAR-100 one on CIFAR-shaped inputs
(32x32x3 uint8, random pixels: throughput does not depend on the values):
`keras_team.zoo.seed_cnn` cut after conv1, conv2, fc1 (frozen), a new linear
head of 100 logits, and an MLP follower (50 hidden units) on the fc1
features; loss = sum of both members' cross-entropies, Adam. The PyTorch
reference is the same team in the write-up's style of loop (frozen part
under `no_grad` in eval mode, `loss.backward()`, `optimizer.step()`),
counting accuracy as Keras' default metrics do (`_torch_team.py`, run in a
process of its own: torch's CUDA build crashes beside TensorFlow).

Keras variants, default strategy: `Team.fit` as compiled by default, with
`steps_per_execution=10`, with `jit_compile=True`, and both. Each batch size
builds every variant, runs one warm-up epoch each (tracing), then `--repeats`
rounds in which every variant trains one epoch in turn (so a burst of other
load hits all of them alike); the median epoch counts. The PyTorch loop then
runs its warm-up and timed epochs in its own process. The machine's load
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
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from importlib.metadata import version

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import keras_team  # noqa: E402
from _common import RESULTS, load_average, machine, write_json  # noqa: E402
from _torch_team import SHAPE, SOURCE_CLASSES, TARGET_CLASSES, team_data  # noqa: E402

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


def torch_epochs(batch_size: int, examples: int, repeats: int, threads: int) -> list[float]:
    """Seconds of `repeats` epochs of the PyTorch loop, after a warm-up one, in a process without TensorFlow.

    torch 2.14's CUDA build crashes (SIGSEGV importing `torch._dynamo`) in a
    process that has loaded TensorFlow, so each framework runs in its own.
    """
    command = [sys.executable, str(pathlib.Path(__file__).with_name("_torch_team.py")), "--examples", str(examples),
               "--batch-size", str(batch_size), "--repeats", str(repeats), "--threads", str(threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def measure(batch_size: int, x: np.ndarray, y: np.ndarray, repeats: int, torch_threads: int | None) -> dict:
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=0).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    runners = {}
    for name, options in VARIANTS.items():
        team = keras_team_model(**options)
        runners[name] = lambda team=team: team.fit(data, epochs=1, verbose=0, shuffle=False)
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
    if torch_threads:
        seconds["torch_loop"] = torch_epochs(batch_size, len(y), repeats, torch_threads)
    figures = {
        name: {"examples_per_s": len(y) / statistics.median(times), "epoch_seconds": [round(t, 3) for t in times]}
        for name, times in seconds.items()
    }
    reference = figures.get("torch_loop", figures["keras_default"])["examples_per_s"]
    for name, fig in figures.items():
        fig["vs_torch_loop" if torch_threads else "vs_keras_default"] = round(fig["examples_per_s"] / reference, 3)
        fig["examples_per_s"] = round(fig["examples_per_s"], 1)
    return {"variants": figures, "load_average_1min_per_round": load}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20000, help="examples per epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per variant (median counts)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 100, 256])
    parser.add_argument("--output", default=str(RESULTS / "throughput.json"))
    args = parser.parse_args(argv)
    torch = importlib.util.find_spec("torch") is not None and version("torch")
    # torch gets as many compute threads as TensorFlow's intra-op pool (0 there: every usable core)
    intra_op_threads = tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))
    x, y = team_data(args.examples)
    started, load_before = time.time(), load_average()
    result = {
        "what": "team training throughput, examples/s (median epoch), CIFAR-shaped inputs; ratios vs the PyTorch loop",
        "device": "CPU",
        "torch": torch or None,
        "compute_threads": {"tensorflow_intra_op": intra_op_threads, "torch": intra_op_threads if torch else None},
        "examples_per_epoch": args.examples,
        "repeats": args.repeats,
        "batch_sizes": {},
    }
    for batch_size in args.batch_sizes:
        result["batch_sizes"][str(batch_size)] = measure(batch_size, x, y, args.repeats, intra_op_threads if torch else None)
        print(batch_size, json.dumps(result["batch_sizes"][str(batch_size)]["variants"]), flush=True)
    result["machine"] = machine(load_before)
    result["seconds"] = round(time.time() - started, 1)
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
