"""Dense Intra-class Patch Swap: swap cells between same-class pairs of scenes, masks and boxes too.

* segmentation: originals and swapped views go through the network in one forward;
  :class:`~patchswap.losses.DenseIPSLoss` adds to the pixel-wise CE of all four views a pixel-wise KL
  from each original (detached) to the swapped view that shows the same content at the same place;
* detection: the swapped views get their boxes from :func:`~patchswap.ops.patch_swap_boxes` (a box is
  kept, clipped to its visible part, when at least ``min_visible`` of it still shows its object);
  the detector's own losses are summed over originals and swapped views. There is no distillation
  term: the detector's outputs (proposals, anchors) have no one-to-one match between two views.

The swap and loss options are the classification ``ips`` method's (:mod:`patchswap.ips_options`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from patchswap.config_base import opt
from patchswap.dense.methods.base import (
    IGNORE_INDEX,
    DenseMethod,
    pair_count,
    register_dense_method,
)
from patchswap.dense.methods.ce import detector_step
from patchswap.ips_options import DistillOptions, SwapOptions
from patchswap.losses import DenseIPSLoss
from patchswap.methods.base import StepOutput
from patchswap.ops import patch_swap_boxes


@register_dense_method
class DenseIPS(DenseMethod):
    name = "ips"
    needs_pairs = True

    @dataclass
    class Options(DistillOptions, SwapOptions):
        """The swap and loss options (shared with classification ``ips``), then the detection one."""

        min_visible: float = opt(0.5, "detection: keep a box when this share of it still shows its object")

        def check(self, prefix: str = "ips.") -> None:
            """Raise ``ValueError`` naming the option (``prefix`` + key) that is out of range."""
            self.check_swap(prefix)
            self.check_distill(prefix)
            if not 0.0 < self.min_visible <= 1.0:
                raise ValueError(f"{prefix}min_visible must be in (0, 1], got {self.min_visible!r}")

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        o = self.options
        o.check(prefix="dense ips ")
        self.swap = o.patch_swap()
        self.loss_fn = DenseIPSLoss(**o.loss_kwargs(), ignore_index=IGNORE_INDEX)

    def segment(
        self, model: nn.Module, images: Tensor, masks: Tensor, generator: torch.Generator | None
    ) -> StepOutput:
        n = pair_count(self.name, images.shape[0])
        swap = self.swap(images[:n], images[n:], generator)
        logits = model(torch.cat([images, swap.a, swap.b]))
        la, lb, lsa, lsb = logits.split(n)
        out = self.loss_fn(
            la, lb, lsa, lsb, masks[:n], masks[n:], swap.cell_mask, patch_size=self.options.patch_size
        )
        parts = {"ce": out.ce.detach(), "kl": out.kl.detach(), "swap_fraction": swap.fraction.mean()}
        return StepOutput(out.loss, logits[: 2 * n], masks, parts, images=4 * n)

    def detect(
        self, model: nn.Module, images: list[Tensor], targets: list[dict], generator: torch.Generator | None
    ) -> StepOutput:
        views, view_targets, fraction = self.swap_detection(images, targets, generator)
        images, targets = images + views, targets + view_targets
        loss, losses = detector_step(model, images, targets)
        return StepOutput(loss, None, None, {"swap_fraction": fraction, **losses}, images=len(images))

    def swap_detection(
        self, images: list[Tensor], targets: list[dict], generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], list[dict], Tensor]:
        """Swapped views of ``[anchors..., partners...]``, their boxes, and the mean swapped share.

        Each anchor and its partner must share a size: cells are swapped at the same positions.
        """
        n = pair_count(self.name, len(images))
        a = torch.stack(images[:n]) if len({im.shape for im in images[:n]}) == 1 else None
        if a is None or any(images[n + i].shape != images[i].shape for i in range(n)):
            raise ValueError(
                "detection ips needs each anchor and its partner at the same size; use data with one image "
                "size (e.g. scenes) or resize the images first"
            )
        b = torch.stack(images[n:])
        swap = self.swap(a, b, generator)
        height, width = a.shape[-2:]
        boxes_a, labels_a, boxes_b, labels_b = patch_swap_boxes(
            [t["boxes"] for t in targets[:n]],
            [t["labels"] for t in targets[:n]],
            [t["boxes"] for t in targets[n:]],
            [t["labels"] for t in targets[n:]],
            swap.cell_mask,
            height,
            width,
            patch_size=self.options.patch_size,
            min_visible=self.options.min_visible,
        )
        views = list(swap.a.unbind()) + list(swap.b.unbind())
        new_targets = [
            {"boxes": bx, "labels": lb} for bx, lb in zip(boxes_a + boxes_b, labels_a + labels_b, strict=True)
        ]
        return views, new_targets, swap.fraction.mean()
