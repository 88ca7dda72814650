"""Plain fine-tuning: pixel-wise cross-entropy (segmentation) or the detector's own losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchswap.dense.methods.base import IGNORE_INDEX, DenseMethod, register_dense_method
from patchswap.methods.base import StepOutput


def detector_step(model: nn.Module, images: list[Tensor], targets: list[dict]) -> tuple[Tensor, dict]:
    """The sum of a torchvision detector's training losses, and each of them (detached) to log."""
    losses = model(images, targets)
    return sum(losses.values()), {k: v.detach() for k, v in losses.items()}


@register_dense_method
class DenseCE(DenseMethod):
    name = "ce"

    def segment(
        self, model: nn.Module, images: Tensor, masks: Tensor, generator: torch.Generator | None
    ) -> StepOutput:
        logits = model(images)
        loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)
        return StepOutput(loss, logits, masks, {"ce": loss.detach()}, images=images.shape[0])

    def detect(
        self, model: nn.Module, images: list[Tensor], targets: list[dict], generator: torch.Generator | None
    ) -> StepOutput:
        loss, parts = detector_step(model, images, targets)
        return StepOutput(loss, None, None, parts, images=len(images))
