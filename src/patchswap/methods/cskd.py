"""CS-KD (Yun et al. 2020): a same-class partner's prediction regularises the anchor's prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from patchswap.config_base import opt
from patchswap.losses import distillation_kl, soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method
from patchswap.methods.checks import check_distillation


@register_method
class ClassWiseSelfKD(Method):
    """``CE(z_a, y) + lambda_cls * T^2 * KL(softmax(z_p / T) || softmax(z_a / T))``.

    ``z_a`` are the anchors' logits, ``z_p`` those of their same-class partners, computed in a
    second forward without gradient (as the paper's code does); only anchors get the CE term.
    """

    name = "cskd"
    needs_pairs = True

    @dataclass
    class Options:
        temperature: float = opt(4.0, "softens both predictions in the class-wise KL term")
        lambda_cls: float = opt(1.0, "weight of the class-wise KL term")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        check_distillation(self.name, o.temperature, lambda_cls=o.lambda_cls)

    def sampler_options(self, batch_size: int) -> dict[str, Any]:
        return {"partner": "same_class"}

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        x, y = batch.x, batch.y
        if x.shape[0] % 2:
            raise ValueError("cskd needs batches laid out [anchors..., partners...] (an even batch)")
        n = x.shape[0] // 2
        logits = model(x[:n])
        with torch.no_grad():
            partner_logits = model(x[n:])
        ce = soft_cross_entropy(logits, y[:n])
        kd = distillation_kl(logits, partner_logits, self.options.temperature)
        loss = ce + self.options.lambda_cls * kd
        return StepOutput(loss, logits, y[:n], {"ce": ce.detach(), "kd": kd.detach()})
