"""Label smoothing (Szegedy et al. 2016): cross-entropy against a target smoothed towards uniform."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from patchswap.config_base import opt
from patchswap.losses import soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method


@register_method
class LabelSmoothing(Method):
    """``CE(z, (1 - s) * one_hot(y) + s / K)``, torch's ``label_smoothing`` convention."""

    name = "label_smoothing"

    @dataclass
    class Options:
        smoothing: float = opt(0.1, "mass spread uniformly over all classes")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        if not 0.0 <= self.options.smoothing < 1.0:
            raise ValueError(f"label_smoothing smoothing must be in [0, 1), got {self.options.smoothing!r}")

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        logits = model(batch.x)
        loss = soft_cross_entropy(logits, batch.y, self.options.smoothing)
        return StepOutput(loss, logits, batch.y, {"ce": loss.detach()})
