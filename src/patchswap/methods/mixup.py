"""MixUp (Zhang et al. 2018): train on convex combinations of image pairs and of their labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from patchswap.config_base import opt
from patchswap.losses import soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method
from patchswap.methods.mixing import mix_targets, mixup


@register_method
class MixUp(Method):
    """``x~ = lam * x + (1 - lam) * x[perm]``, loss ``CE(z(x~), lam * y + (1 - lam) * y[perm])``."""

    name = "mixup"

    @dataclass
    class Options:
        alpha: float = opt(1.0, "lam ~ Beta(alpha, alpha), one per batch")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        if not self.options.alpha > 0:
            raise ValueError(f"mixup alpha must be positive, got {self.options.alpha!r}")

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        mixed = mixup(batch.x, self.options.alpha, generator=batch.generator)
        logits = model(mixed.x)
        target = mix_targets(batch.y, mixed.perm, mixed.lam, logits.shape[1])
        loss = soft_cross_entropy(logits, target)
        parts = {"ce": loss.detach(), "lam": mixed.lam.detach()}
        return StepOutput(loss, logits, target.argmax(dim=1), parts)
