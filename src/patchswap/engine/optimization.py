"""The optimizer and the per-step learning-rate schedule of a run (classification and dense alike).

Fine-tuning (``optim.backbone_lr_scale != 1``) gives the optimizer two parameter groups: the
classifier head at ``lr`` (first, so the logged ``lr`` is the schedule of ``optim.lr``) and everything
else at ``lr x backbone_lr_scale``; the schedule multiplies both alike. The head is found by
:func:`patchswap.models.split_head`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

from patchswap.engine.config import OptimSection
from patchswap.models import split_head

__all__ = ["configure_optimization", "lr_factor", "param_groups"]


def lr_factor(optim: OptimSection, step: int, steps_per_epoch: int, epochs: int) -> float:
    """Multiplier of the base lr at an optimizer step (per-step schedules, epoch-based milestones)."""
    epoch_f = step / max(1, steps_per_epoch)
    warm = optim.warmup_epochs
    if warm and epoch_f < warm:
        return (step + 1) / (warm * steps_per_epoch)
    if optim.schedule == "cosine":
        span = max(1e-8, epochs - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch_f - warm) / span)))
    if optim.schedule == "multistep":
        passed = sum(1 for m in optim.milestones if int(epoch_f) >= m)
        return optim.lr_decay**passed
    return 1.0


def param_groups(o: OptimSection, model: nn.Module) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one, or ``head`` (lr) and ``backbone`` (lr x backbone_lr_scale)."""
    if o.backbone_lr_scale == 1.0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": o.lr, "name": "all"}]
    head, backbone = split_head(model)
    groups = [
        {"params": [p for _, p in head if p.requires_grad], "lr": o.lr, "name": "head"},
        {
            "params": [p for _, p in backbone if p.requires_grad],
            "lr": o.lr * o.backbone_lr_scale,
            "name": "backbone",
        },
    ]
    return [g for g in groups if g["params"]]


def configure_optimization(o: OptimSection, model: nn.Module, trainer: L.Trainer) -> dict[str, Any]:
    """Optimizer and per-step lr schedule of ``model``'s trainable parameters (Lightning's format)."""
    groups = param_groups(o, model)
    if o.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    else:
        opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    epochs = trainer.max_epochs or 1
    total = max(1, int(trainer.estimated_stepping_batches))
    per_epoch = max(1, total // epochs)
    if o.schedule == "onecycle":
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in groups], total_steps=total
        )
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(o, step, per_epoch, epochs))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
