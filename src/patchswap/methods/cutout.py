"""Cutout (DeVries & Taylor 2017): zero one random square per image, then cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from patchswap.config_base import opt
from patchswap.losses import soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method
from patchswap.methods.mixing import cutout


def cutout_size(size: int, size_fraction: float | None, height: int, width: int) -> int:
    """The hole side in pixels: ``size``, or ``size_fraction`` of the shorter image side when given."""
    if size_fraction is None:
        return size
    return max(1, round(size_fraction * min(height, width)))


@register_method
class Cutout(Method):
    name = "cutout"

    @dataclass
    class Options:
        size: int = opt(8, "hole side in pixels (paper: 16 on CIFAR-10, 8 on CIFAR-100)")
        size_fraction: float | None = opt(None, "hole side as a fraction of the image side (overrides size)")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        if o.size < 1:
            raise ValueError(f"cutout size must be at least 1 pixel, got {o.size!r}")
        if o.size_fraction is not None and not 0.0 < o.size_fraction <= 1.0:
            raise ValueError(f"cutout size_fraction must be in (0, 1], got {o.size_fraction!r}")

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        h, w = batch.x.shape[-2:]
        size = cutout_size(self.options.size, self.options.size_fraction, h, w)
        x = cutout(batch.x, size, generator=batch.generator)
        logits = model(x)
        loss = soft_cross_entropy(logits, batch.y)
        return StepOutput(loss, logits, batch.y, {"ce": loss.detach()})
