"""Tf-KD_reg (Yuan et al. 2020): distil from a hand-designed "virtual teacher" instead of a network.

Two forms: ``paper`` (the default, the paper's equations: Hinton's KD with ``log p^d`` as the teacher's
logits) and ``official`` (the authors' code, ``loss_kd_regularization``: the teacher is
``softmax(p^d / T)``, the student's logits are not divided by ``T``, and the KL is averaged over all
``N x K`` elements and multiplied by ``multiplier``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchswap.config_base import opt
from patchswap.losses import distillation_kl, soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method
from patchswap.methods.checks import check_distillation

FORMS = ("paper", "official")
DEFAULT_A = {"paper": 0.9, "official": 0.99}  # the paper's value; the value fixed in the authors' code


def virtual_teacher_logits(y: Tensor, num_classes: int, a: float) -> Tensor:
    """``log p^d`` with ``p^d = a`` on the true class and ``(1 - a) / (K - 1)`` on every other class."""
    if num_classes < 2:
        raise ValueError(f"tfkd needs at least 2 classes, got {num_classes}")
    rest = math.log((1.0 - a) / (num_classes - 1))
    logits = torch.full((y.shape[0], num_classes), rest, dtype=torch.float32, device=y.device)
    return logits.scatter_(1, y.long()[:, None], math.log(a))


@register_method
class TeacherFreeKD(Method):
    """``(1 - alpha) * CE(z, y) + alpha * T^2 * KL(softmax(log p^d / T) || softmax(z / T))``.

    ``form="official"``: ``(1 - alpha) * CE(z, y) + alpha * multiplier * KL(softmax(p^d / T) ||
    softmax(z))`` with the KL summed over classes and divided by ``N * K`` (``KLDivLoss``'s
    ``reduction="mean"``).
    """

    name = "tfkd"

    @dataclass
    class Options:
        a: float | None = opt(
            None, "the virtual teacher's true-class probability (default 0.9; 0.99 if official)"
        )
        alpha: float = opt(0.1, "weight of the KL term; 1 - alpha weighs CE")
        temperature: float = opt(20.0, "softens teacher (log p^d / T) and student alike")
        form: str = opt("paper", "paper (the paper's equations) or official (the authors' code)")
        multiplier: float = opt(
            100.0, "official form only: the KL's weight (the authors' ResNet-18 CIFAR value)"
        )

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        if o.form not in FORMS:
            raise ValueError(f"tfkd form must be one of {FORMS}, got {o.form!r}")
        self.a = DEFAULT_A[o.form] if o.a is None else o.a
        if not 0.0 < self.a < 1.0:
            raise ValueError(f"tfkd a must be in (0, 1), got {self.a!r}")
        if not 0.0 <= o.alpha <= 1.0:
            raise ValueError(f"tfkd alpha must be in [0, 1], got {o.alpha!r}")
        check_distillation(self.name, o.temperature, multiplier=o.multiplier)

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        o = self.options
        logits = model(batch.x)
        if o.form == "official":
            return self._official(logits, batch.y)
        teacher = virtual_teacher_logits(batch.y, logits.shape[1], self.a)
        ce = soft_cross_entropy(logits, batch.y)
        kd = distillation_kl(logits, teacher, o.temperature)
        loss = (1.0 - o.alpha) * ce + o.alpha * kd
        return StepOutput(loss, logits, batch.y, {"ce": ce.detach(), "kd": kd.detach()})

    def _official(self, logits: Tensor, y: Tensor) -> StepOutput:
        """The authors' ``loss_kd_regularization``, in float32."""
        o = self.options
        with torch.autocast(device_type=logits.device.type, enabled=False):
            p_d = virtual_teacher_logits(y, logits.shape[1], self.a).exp()
            log_teacher = F.log_softmax(p_d / o.temperature, dim=1)  # probabilities over T, not their logs
            log_student = F.log_softmax(logits.float(), dim=1)  # not divided by T
            kl = log_teacher.exp() * (log_teacher - log_student)
            kd = kl.mean() * o.multiplier  # KLDivLoss(reduction="mean"): the mean over all N * K terms
        ce = soft_cross_entropy(logits, y)
        loss = (1.0 - o.alpha) * ce + o.alpha * kd
        return StepOutput(loss, logits, y, {"ce": ce.detach(), "kd": kd.detach()})
