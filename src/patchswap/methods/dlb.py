"""DLB (Shen et al. 2022): self-distillation from the last mini-batch, without a special sampler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from patchswap.losses import distillation_kl, soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method


@register_method
class LastMiniBatchKD(Method):
    """``CE(z_t, y_t) + alpha * T^2 * KL(softmax(z_{t-1}(k) / T) || softmax(z_t(k) / T))``.

    ``k`` is the second half of the previous step's (augmented) images, kept in the method with
    their detached logits ``z_{t-1}(k)`` and forwarded again with the current batch, so a step sees
    1.5x the images of a plain step. The memory starts empty every epoch and is not checkpointed:
    a run resumed from an epoch-end checkpoint continues exactly.
    """

    name = "dlb"

    @dataclass
    class Options:
        temperature: float = 3.0
        alpha: float = 1.0  # weight of the last-mini-batch KL term

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        if not o.temperature > 0:
            raise ValueError(f"dlb temperature must be positive, got {o.temperature!r}")
        if o.alpha < 0:
            raise ValueError(f"dlb alpha must be non-negative, got {o.alpha!r}")
        self._kept: tuple[Tensor, Tensor] | None = None  # (images, their logits) from the last step
        self._kept_epoch = -1

    def reset(self) -> None:
        """Forget the kept half-batch (done automatically when the epoch changes)."""
        self._kept, self._kept_epoch = None, -1

    def _usable_kept(self, x: Tensor, epoch: int) -> tuple[Tensor, Tensor] | None:
        if self._kept is None or self._kept_epoch != epoch:
            return None
        images, logits = self._kept
        if images.shape[1:] != x.shape[1:] or images.device != x.device:
            return None
        return images, logits

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        x, y = batch.x, batch.y
        n = x.shape[0]
        kept = self._usable_kept(x, batch.epoch)
        logits_all = model(torch.cat([x, kept[0]]) if kept is not None else x)
        logits = logits_all[:n]
        ce = soft_cross_entropy(logits, y)
        if kept is not None:
            kd = distillation_kl(logits_all[n:], kept[1], self.options.temperature)
        else:
            kd = logits.new_zeros((), dtype=torch.float32)
        loss = ce + self.options.alpha * kd
        half = n // 2
        self._kept = (x[half:].detach().clone(), logits[half:].detach())
        self._kept_epoch = batch.epoch
        parts = {"ce": ce.detach(), "kd": kd.detach()}
        return StepOutput(loss, logits, y, parts, images=logits_all.shape[0])
