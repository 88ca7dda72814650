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
