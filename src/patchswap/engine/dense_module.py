"""The LightningModule of ``patchswap transfer``: a registered dense method on segmentation or detection.

Segmentation batches are ``(images uint8 [B,C,H,W], masks int64 [B,H,W], index)``; detection batches
``(images: list of uint8 [C,H,W], targets: list of {"boxes", "labels"}, index)``. The module flips and
scales them, then calls the dense method (:mod:`patchswap.dense.methods`: ``ce``, ``ips``, ...), which
returns the loss; methods with ``needs_pairs`` get ``[anchors..., partners...]`` from the pair sampler.

Randomness (flips, swaps, pairing) is re-derived from (seed, epoch) as in the classification module:
the flips draw from the epoch's generator first, then the method's swaps.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from patchswap.dense.methods import IGNORE_INDEX, DenseBatch, DenseMethod
from patchswap.dense.metrics import DetectionMetrics, SegmentationMetrics
from patchswap.engine.config import OptimSection
from patchswap.engine.optimization import configure_optimization
from patchswap.engine.seeded import SeededTraining

__all__ = ["IGNORE_INDEX", "DenseModule", "score_key"]


def score_key(task: str) -> str:
    """The validation metric a dense run is selected on."""
    return "val/miou" if task == "segment" else "val/map"


def _without_nan(value: Any) -> Any:
    """NaN (a class with nothing to score) becomes None, so summaries are valid JSON and compare equal."""
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


class DenseModule(SeededTraining):
    """Fine-tunes a segmentation or detection model with a dense method (ce, ips, ...)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        task: str,
        method: DenseMethod,
        class_names: list[str],
        optim: OptimSection,
        seed: int,
        flip: bool = False,
    ) -> None:
        super().__init__()
        self.model, self.task, self.method = model, task, method
        self.optim_cfg, self.seed, self.flip = optim, seed, flip
        self.class_names = list(class_names)
        self._generator: torch.Generator | None = None
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
        n = len(images)
        if self.task == "segment":
            images, targets = self._flip_segment(images, targets)
        else:
            images, targets = self._flip_detect(images, targets)
        max_epochs = self.trainer.max_epochs or 1
        dense = DenseBatch(self.task, images, targets, self._generator, self.current_epoch, max_epochs)
        out = self.method(self.model, dense)
        self.tally.images += out.images if out.images is not None else n
        loss = out.loss
        self.log(
            "loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, logger=False, batch_size=n
        )
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        for key, value in out.parts.items():
            self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True, batch_size=n)
        return loss

    def _flip_segment(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random horizontal flips of images and masks alike, then pixels in [0, 1]."""
        flips = self._flips(images.shape[0])
        images = torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)
        masks = torch.where(flips.view(-1, 1, 1), masks.flip(-1), masks)
        return self._unit(images), masks

    def _flip_detect(
        self, images: list[torch.Tensor], targets: list[dict]
    ) -> tuple[list[torch.Tensor], list[dict]]:
        """Pixels in [0, 1], then random horizontal flips of images and their boxes alike."""
        images = [self._unit(im) for im in images]
        targets = [dict(t) for t in targets]
        for i, flip in enumerate(self._flips(len(images)).tolist()):
            if flip:
                width = images[i].shape[-1]
                images[i] = images[i].flip(-1)
                boxes = targets[i]["boxes"].clone()
                boxes[:, [0, 2]] = width - targets[i]["boxes"][:, [2, 0]]
                targets[i]["boxes"] = boxes
        return images, targets

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
            preds = self.model([self._unit(im) for im in images])
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
