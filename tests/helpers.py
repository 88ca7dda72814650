"""Small test doubles shared by several test modules (``tests/`` is on pytest's pythonpath)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn


class RecordingLinear(nn.Module):
    """A seeded linear classifier that keeps a copy of every input it sees."""

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(in_features, classes)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.fc(x.flatten(1))


def randomise_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics, so an eval-mode comparison exercises them."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)


def pairs(n, c, h, w, dtype=torch.float32, seed=0):
    """Two seeded random batches ``[n, c, h, w]`` of ``dtype``: the pairs a swap exchanges cells between."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        a = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
        b = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    else:
        a = torch.randn(n, c, h, w, generator=g).to(dtype)
        b = torch.randn(n, c, h, w, generator=g).to(dtype)
    return a, b


def tiny_net() -> torch.nn.Module:
    """A seeded conv + BatchNorm + linear network on 1x8x8 inputs, for checkpoint tests."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def tiny_checkpoint(model: torch.nn.Module) -> dict:
    """A Lightning-shaped checkpoint of ``model`` after one SGD step (state, epoch, step, optimizer)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    return {
        "state_dict": model.state_dict(),
        "epoch": 3,
        "global_step": 40,
        "optimizer_states": [opt.state_dict()],
    }


def training_means(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv's training means per epoch (not the clock: seconds and images per second)."""
    with (Path(run_dir) / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    clock = ("train/epoch_seconds", "train/images_per_s")
    keep = [k for k in rows[0] if (k.startswith("train/") or k == "lr") and k not in clock]
    return [{k: r[k] for k in keep} for r in rows]


def assert_same_training_means(a: Path, b: Path) -> None:
    """Two runs logged the same training means in every epoch (to float32 rounding)."""
    ra, rb = training_means(a), training_means(b)
    assert len(ra) == len(rb) and ra[0].keys() == rb[0].keys()
    for row_a, row_b in zip(ra, rb, strict=True):
        for key in row_a:
            assert float(row_a[key]) == pytest.approx(float(row_b[key]), rel=1e-5), (key, row_a, row_b)
