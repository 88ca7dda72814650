"""Tf-KD_reg (Yuan et al. 2020): distil from a hand-designed "virtual teacher" instead of a network."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from patchswap.losses import distillation_kl, soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method


def virtual_teacher_logits(y: Tensor, num_classes: int, a: float) -> Tensor:
    """``log p^d`` with ``p^d = a`` on the true class and ``(1 - a) / (K - 1)`` on every other class."""
    if num_classes < 2:
        raise ValueError(f"tfkd needs at least 2 classes, got {num_classes}")
    rest = math.log((1.0 - a) / (num_classes - 1))
    logits = torch.full((y.shape[0], num_classes), rest, dtype=torch.float32, device=y.device)
    return logits.scatter_(1, y.long()[:, None], math.log(a))


@register_method
class TeacherFreeKD(Method):
    """``(1 - alpha) * CE(z, y) + alpha * T^2 * KL(softmax(log p^d / T) || softmax(z / T))``."""

    name = "tfkd"

    @dataclass
    class Options:
        a: float = 0.9  # the virtual teacher's probability of the true class
        alpha: float = 0.1  # weight of the KL term; 1 - alpha weighs CE
        temperature: float = 20.0  # softens teacher (log p^d / T) and student alike

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        if not 0.0 < o.a < 1.0:
            raise ValueError(f"tfkd a must be in (0, 1), got {o.a!r}")
        if not 0.0 <= o.alpha <= 1.0:
            raise ValueError(f"tfkd alpha must be in [0, 1], got {o.alpha!r}")
        if not o.temperature > 0:
            raise ValueError(f"tfkd temperature must be positive, got {o.temperature!r}")

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        o = self.options
        logits = model(batch.x)
        teacher = virtual_teacher_logits(batch.y, logits.shape[1], o.a)
        ce = soft_cross_entropy(logits, batch.y)
        kd = distillation_kl(logits, teacher, o.temperature)
        loss = (1.0 - o.alpha) * ce + o.alpha * kd
        return StepOutput(loss, logits, batch.y, {"ce": ce.detach(), "kd": kd.detach()})
