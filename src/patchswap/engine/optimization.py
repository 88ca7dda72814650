"""The optimizer and the per-step learning-rate schedule of a run (classification and dense alike)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

from patchswap.engine.config import OptimSection

__all__ = ["configure_optimization", "lr_factor"]


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


def configure_optimization(o: OptimSection, model: nn.Module, trainer: L.Trainer) -> dict[str, Any]:
    """Optimizer and per-step lr schedule of ``model``'s trainable parameters (Lightning's format)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "sgd":
        opt = torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    else:
        opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    epochs = trainer.max_epochs or 1
    total = max(1, int(trainer.estimated_stepping_batches))
    per_epoch = max(1, total // epochs)
    if o.schedule == "onecycle":
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=total)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(o, step, per_epoch, epochs))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
