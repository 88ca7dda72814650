"""Plain cross-entropy (optionally label-smoothed): the baseline every method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from patchswap.config_base import opt
from patchswap.losses import soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method


@register_method
class CrossEntropy(Method):
    name = "ce"

    @dataclass
    class Options:
        label_smoothing: float = opt(0.0, "mass spread uniformly over all classes")

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        logits = model(batch.x)
        loss = soft_cross_entropy(logits, batch.y, self.options.label_smoothing)
        return StepOutput(loss, logits, batch.y, {"ce": loss.detach()})
