"""Small test doubles shared by several test modules (``tests/`` is on pytest's pythonpath)."""

from __future__ import annotations

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
