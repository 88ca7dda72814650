"""IPSLoss and the small distillation helpers that other methods share.

Everything is computed in float32, even under autocast: softmax with a temperature over many
classes loses too much in half precision, and the KL term is a small difference of large logs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DIRECTIONS",
    "IPSLoss",
    "IPSLossOutput",
    "distillation_kl",
    "soft_cross_entropy",
    "true_class_prob",
]

DIRECTIONS = ("symmetric", "confident")


class IPSLossOutput(NamedTuple):
    """The total loss and its parts, for logging (the parts are detached)."""

    loss: Tensor
    ce: Tensor
    kd: Tensor
    teacher_a_fraction: Tensor


def _check_target(logits: Tensor, target: Tensor) -> None:
    n, c = logits.shape
    if target.dim() == 1:
        if target.shape[0] != n:
            raise ValueError(f"target has {target.shape[0]} labels for {n} logits rows")
        if target.is_floating_point():
            raise ValueError("class-index targets must be integers; pass probabilities as [N, num_classes]")
    elif target.dim() == 2:
        if tuple(target.shape) != (n, c):
            raise ValueError(
                f"probability targets must be [N, num_classes] = {(n, c)}, got {tuple(target.shape)}"
            )
    else:
        raise ValueError(
            f"target must be class indices [N] or probabilities [N, C], got {tuple(target.shape)}"
        )


def soft_cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy in float32 for class indices ``[N]`` or probability targets ``[N, C]``."""
    _check_target(logits, target)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        t = target if target.dim() == 1 else target.float()
        return F.cross_entropy(logits.float(), t, label_smoothing=label_smoothing)


def distillation_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    *,
    t2_scaling: bool = True,
    detach_teacher: bool = True,
    reduction: str = "batchmean",
) -> Tensor:
    """Hinton's KD term ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, in float32.

    ``reduction="none"`` gives one value per row, ``"batchmean"`` their mean. The teacher's
    logits are detached unless ``detach_teacher=False`` (the seed's sketch never detaches).
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            "student and teacher logits must both be [N, num_classes], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    if reduction not in ("none", "batchmean"):
        raise ValueError(f"reduction must be 'none' or 'batchmean', got {reduction!r}")
    if detach_teacher:
        teacher_logits = teacher_logits.detach()
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
        log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
        if t2_scaling:
            kl = kl * (temperature**2)
        return kl if reduction == "none" else kl.mean()


def true_class_prob(logits: Tensor, target: Tensor) -> Tensor:
    """Probability each row puts on its true class (expected under probability targets)."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        p = F.softmax(logits.detach().float(), dim=1)
        if target.dim() == 1:
            return p.gather(1, target[:, None].long())[:, 0]
        return (p * target.float()).sum(dim=1)


class IPSLoss(nn.Module):
    """Cross-entropy on both swapped views plus instance-to-instance distillation between them.

    ``L = gamma * (CE(z_a, y) + CE(z_b, y)) / 2 + alpha * KD`` where KD averages, over the
    teaching directions, ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``.
    ``direction="symmetric"``: each view teaches the other (the paper's two KD terms).
    ``direction="confident"``: per pair, the view with the higher true-class probability
    teaches the other only. ``detach_teacher`` stops the gradient through the teacher's side.
    """

    def __init__(
        self,
        temperature: float = 4.0,
        alpha: float = 1.0,
        gamma: float = 1.0,
        direction: str = "symmetric",
        detach_teacher: bool = True,
        t2_scaling: bool = True,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if alpha < 0 or gamma < 0:
            raise ValueError(f"alpha and gamma must be non-negative, got alpha={alpha!r}, gamma={gamma!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.direction = direction
        self.detach_teacher = bool(detach_teacher)
        self.t2_scaling = bool(t2_scaling)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits_a: Tensor, logits_b: Tensor, target: Tensor) -> IPSLossOutput:
        if logits_a.shape != logits_b.shape or logits_a.dim() != 2:
            raise ValueError(
                "logits_a and logits_b must both be [N, num_classes], got "
                f"{tuple(logits_a.shape)} and {tuple(logits_b.shape)}"
            )
        _check_target(logits_a, target)
        ce = (
            soft_cross_entropy(logits_a, target, self.label_smoothing)
            + soft_cross_entropy(logits_b, target, self.label_smoothing)
        ) / 2
        kd_opts = dict(
            temperature=self.temperature, t2_scaling=self.t2_scaling, detach_teacher=self.detach_teacher
        )
        a_confident = true_class_prob(logits_a, target) >= true_class_prob(logits_b, target)
        if self.direction == "symmetric":
            kd = (
                distillation_kl(logits_b, logits_a, **kd_opts)
                + distillation_kl(logits_a, logits_b, **kd_opts)
            ) / 2
        else:
            a_teaches_b = distillation_kl(logits_b, logits_a, reduction="none", **kd_opts)
            b_teaches_a = distillation_kl(logits_a, logits_b, reduction="none", **kd_opts)
            kd = torch.where(a_confident, a_teaches_b, b_teaches_a).mean()
        loss = self.gamma * ce + self.alpha * kd
        return IPSLossOutput(loss, ce.detach(), kd.detach(), a_confident.float().mean())

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, alpha={self.alpha}, gamma={self.gamma}, "
            f"direction={self.direction!r}, detach_teacher={self.detach_teacher}, "
            f"t2_scaling={self.t2_scaling}"
        )
