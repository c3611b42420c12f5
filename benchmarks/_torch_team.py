"""The write-up's team as a PyTorch loop, timed in a process without TensorFlow (see throughput.py).

Run by `throughput.py`; prints the seconds of each timed epoch as a JSON list:

    python benchmarks/_torch_team.py --examples 4000 --batch-size 100 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SHAPE, SOURCE_CLASSES, TARGET_CLASSES = (32, 32, 3), 10, 100


def team_data(examples: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-shaped random uint8 images and labels of the target task (seeded: both frameworks get the same)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (examples, *SHAPE), dtype=np.uint8)
    y = rng.integers(0, TARGET_CLASSES, examples).astype(np.int32)
    return x, y


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    team = TorchTeam(*team_data(args.examples), args.batch_size)
    team.epoch()  # warm-up
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        team.epoch()
        seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


if __name__ == "__main__":
    main()
