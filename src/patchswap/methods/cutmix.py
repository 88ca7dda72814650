"""CutMix (Yun et al. 2019): paste a box from another image; labels mix by the box's area."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from patchswap.config_base import opt
from patchswap.losses import soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method
from patchswap.methods.mixing import cutmix, mix_targets


@register_method
class CutMix(Method):
    """Box of ``x[perm]`` pasted into ``x``; loss ``CE(z, lam * y + (1 - lam) * y[perm])``, ``lam`` the
    share of the image left uncovered."""

    name = "cutmix"

    @dataclass
    class Options:
        alpha: float = opt(1.0, "lam ~ Beta(alpha, alpha) sets the box area, one box per batch")
        prob: float = opt(1.0, "probability that a batch is mixed (timm's prob)")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        if not o.alpha > 0:
            raise ValueError(f"cutmix alpha must be positive, got {o.alpha!r}")
        if not 0.0 <= o.prob <= 1.0:
            raise ValueError(f"cutmix prob must be in [0, 1], got {o.prob!r}")

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        o = self.options
        mixed = cutmix(batch.x, o.alpha, prob=o.prob, generator=batch.generator)
        logits = model(mixed.x)
        target = mix_targets(batch.y, mixed.perm, mixed.lam, logits.shape[1])
        loss = soft_cross_entropy(logits, target)
        parts = {"ce": loss.detach(), "lam": mixed.lam.detach()}
        return StepOutput(loss, logits, target.argmax(dim=1), parts)
