"""The LightningModule of ``patchswap transfer``: ce or dense IPS on segmentation and detection.

Segmentation batches are ``(images uint8 [B,C,H,W], masks int64 [B,H,W], index)``; detection batches
``(images: list of uint8 [C,H,W], targets: list of {"boxes", "labels"}, index)``. With ``ips`` the batch
is laid out ``[anchors..., partners...]`` (pairs sharing a class, from the pair sampler) and:

* segmentation: originals and swapped views go through the network in one forward;
  :class:`~patchswap.losses.DenseIPSLoss` adds to the pixel-wise CE of all four views a pixel-wise KL
  from each original (detached) to the swapped view that shows the same content at the same place;
* detection: the swapped views get their boxes from :func:`~patchswap.ops.patch_swap_boxes` (a box is
  kept, clipped to its visible part, when at least ``min_visible`` of it still shows its object);
  the detector's own losses are summed over originals and swapped views. There is no distillation
  term: the detector's outputs (proposals, anchors) have no one-to-one match between two views.

Randomness (flips, swaps, pairing) is re-derived from (seed, epoch) as in the classification module.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from patchswap.dense.metrics import DetectionMetrics, SegmentationMetrics
from patchswap.engine.config import OptimSection
from patchswap.engine.module import SeededTraining, configure_optimization
from patchswap.engine.transfer_config import DenseIPSSection
from patchswap.losses import DenseIPSLoss
from patchswap.ops import patch_swap, patch_swap_boxes

__all__ = ["IGNORE_INDEX", "DenseModule", "score_key"]

IGNORE_INDEX = 255


def score_key(task: str) -> str:
    """The validation metric a dense run is selected on."""
    return "val/miou" if task == "segment" else "val/map"


def _without_nan(value: Any) -> Any:
    """NaN (a class with nothing to score) becomes None, so summaries are valid JSON and compare equal."""
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


class DenseModule(SeededTraining):
    """Fine-tunes a segmentation or detection model with ce or dense IPS."""

    def __init__(
        self,
        model: nn.Module,
        *,
        task: str,
        method: str,
        ips: DenseIPSSection,
        class_names: list[str],
        optim: OptimSection,
        seed: int,
        flip: bool = False,
    ) -> None:
        super().__init__()
        self.model, self.task, self.method = model, task, method
        self.ips, self.optim_cfg, self.seed, self.flip = ips, optim, seed, flip
        self.class_names = list(class_names)
        self.loss_fn = DenseIPSLoss(
            temperature=ips.temperature, alpha=ips.alpha, t2_scaling=ips.t2_scaling, ignore_index=IGNORE_INDEX
        )
        self._generator: torch.Generator | None = None
        self._epoch_images = 0
        self._epoch_t0 = time.perf_counter()
        self.results: dict[str, dict[str, Any]] = {}
        self._metrics: SegmentationMetrics | DetectionMetrics | None = None

    @staticmethod
    def _unit(x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in [0, 1]: the dense models normalise inside (torchvision's convention)."""
        return x.float() / 255

    def _flips(self, n: int) -> torch.Tensor:
        if not self.flip:
            return torch.zeros(n, dtype=torch.bool, device=self.device)
        return torch.rand(n, generator=self._generator, device=self.device) < 0.5

    def forward(self, x: Any) -> Any:
        return self.model(x)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets, _ = batch
        if self.task == "segment":
            loss, parts, seen = self._segment_step(images, targets)
        else:
            loss, parts, seen = self._detect_step(images, targets)
        self._epoch_images += seen
        n = len(images)
        self.log(
            "loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, logger=False, batch_size=n
        )
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        for key, value in parts.items():
            self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True, batch_size=n)
        return loss

    def _segment_step(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, dict, int]:
        flips = self._flips(images.shape[0])
        images = torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)
        masks = torch.where(flips.view(-1, 1, 1), masks.flip(-1), masks)
        x = self._unit(images)
        if self.method == "ce":
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)
            return loss, {"ce": loss.detach()}, x.shape[0]
        n = x.shape[0] // 2
        swap = patch_swap(x[:n], x[n:], grid=self.ips.grid, prob=self.ips.prob, generator=self._generator)
        logits = self.model(torch.cat([x, swap.a, swap.b]))
        la, lb, lsa, lsb = logits.split(n)
        out = self.loss_fn(la, lb, lsa, lsb, masks[:n], masks[n:], swap.cell_mask)
        parts = {"ce": out.ce.detach(), "kl": out.kl.detach(), "swap_fraction": swap.fraction.mean()}
        return out.loss, parts, 4 * n

    def _detect_step(self, images: list[torch.Tensor], targets: list[dict]) -> tuple[torch.Tensor, dict, int]:
        images = [im.float() / 255 for im in images]
        targets = [dict(t) for t in targets]
        for i, flip in enumerate(self._flips(len(images)).tolist()):
            if flip:
                width = images[i].shape[-1]
                images[i] = images[i].flip(-1)
                boxes = targets[i]["boxes"].clone()
                boxes[:, [0, 2]] = width - targets[i]["boxes"][:, [2, 0]]
                targets[i]["boxes"] = boxes
        parts: dict[str, torch.Tensor] = {}
        if self.method == "ips":
            swapped_images, swapped_targets, fraction = self._swap_detection(images, targets)
            images, targets = images + swapped_images, targets + swapped_targets
            parts["swap_fraction"] = fraction
        losses = self.model(images, targets)
        loss = sum(losses.values())
        parts.update({k: v.detach() for k, v in losses.items()})
        return loss, parts, len(images)

    def _swap_detection(
        self, images: list[torch.Tensor], targets: list[dict]
    ) -> tuple[list[torch.Tensor], list[dict], torch.Tensor]:
        """Swapped views of ``[anchors..., partners...]`` and their boxes (pairs must share a size)."""
        n = len(images) // 2
        a = torch.stack(images[:n]) if len({im.shape for im in images[:n]}) == 1 else None
        if a is None or any(images[n + i].shape != images[i].shape for i in range(n)):
            raise ValueError(
                "detection ips needs each anchor and its partner at the same size; use data with one image "
                "size (e.g. scenes) or resize the images first"
            )
        b = torch.stack(images[n:])
        swap = patch_swap(a, b, grid=self.ips.grid, prob=self.ips.prob, generator=self._generator)
        height, width = a.shape[-2:]
        boxes_a, labels_a, boxes_b, labels_b = patch_swap_boxes(
            [t["boxes"] for t in targets[:n]],
            [t["labels"] for t in targets[:n]],
            [t["boxes"] for t in targets[n:]],
            [t["labels"] for t in targets[n:]],
            swap.cell_mask,
            height,
            width,
            min_visible=self.ips.min_visible,
        )
        views = list(swap.a.unbind()) + list(swap.b.unbind())
        new_targets = [
            {"boxes": bx, "labels": lb} for bx, lb in zip(boxes_a + boxes_b, labels_a + labels_b, strict=True)
        ]
        return views, new_targets, swap.fraction.mean()

    # -- evaluation ----------------------------------------------------------------------------
    def _new_metrics(self) -> SegmentationMetrics | DetectionMetrics:
        if self.task == "segment":
            return SegmentationMetrics(
                len(self.class_names), ignore_index=IGNORE_INDEX, class_names=self.class_names
            )
        return DetectionMetrics(self.class_names)

    def _eval_start(self) -> None:
        self._metrics = self._new_metrics()

    def _eval_step(self, batch: Any) -> None:
        images, targets, _ = batch
        assert self._metrics is not None
        if self.task == "segment":
            logits = self.model(self._unit(images))
            self._metrics.update(logits.argmax(1), targets)
        else:
            preds = self.model([im.float() / 255 for im in images])
            self._metrics.update(
                [{k: v.detach().cpu() for k, v in p.items()} for p in preds],
                [{k: v.cpu() for k, v in t.items()} for t in targets],
            )

    def _eval_end(self, split: str) -> None:
        assert self._metrics is not None
        res = _without_nan(self._metrics.compute())
        self.results[split] = res
        for key, value in res.items():
            if isinstance(value, float):
                self.log(f"{split}/{key}", value, on_step=False, on_epoch=True, batch_size=1)

    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        return configure_optimization(self.optim_cfg, self.model, self.trainer)
