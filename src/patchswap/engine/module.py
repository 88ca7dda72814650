"""The classification LightningModule: device-side augmentation, the method's step, exact eval metrics.

Its randomness comes from :mod:`patchswap.engine.seeded`, its optimizer from
:mod:`patchswap.engine.optimization`.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from patchswap.data import DeviceAugment
from patchswap.engine.config import OptimSection
from patchswap.engine.loaders import IGNORE_LABEL
from patchswap.engine.optimization import configure_optimization
from patchswap.engine.seeded import SeededTraining
from patchswap.methods import Method, MethodBatch

__all__ = ["ClassifierModule"]


class _EvalMetrics(nn.Module):
    """Accuracy, ECE and NLL that skip padding rows (label IGNORE_LABEL), so sharded evaluation is exact."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.acc = MulticlassAccuracy(num_classes=num_classes, average="micro", ignore_index=IGNORE_LABEL)
        self.ece = MulticlassCalibrationError(
            num_classes=num_classes, n_bins=15, norm="l1", ignore_index=IGNORE_LABEL
        )
        self.nll = MeanMetric()

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        logits = logits.float()
        keep = y != IGNORE_LABEL
        self.acc.update(logits, y)
        self.ece.update(logits.softmax(1), y)
        nll = F.cross_entropy(logits, y.clamp(min=0), reduction="none")
        self.nll.update(nll, weight=keep.float())


class ClassifierModule(SeededTraining):
    """Trains ``model`` with ``method``; evaluates plain classification on val and test."""

    temperature: float | None = None  # divides eval logits when the run is calibrated

    def __init__(
        self,
        model: nn.Module,
        method: Method,
        *,
        num_classes: int,
        train_augment: DeviceAugment,
        eval_augment: DeviceAugment,
        optim: OptimSection,
        seed: int,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.method = method
        self.train_augment = train_augment
        self.eval_augment = eval_augment
        self.optim_cfg = optim
        self.seed = seed
        self.channels_last = channels_last
        self.val_metrics = _EvalMetrics(num_classes)
        self.test_metrics = _EvalMetrics(num_classes)
        self._generator: torch.Generator | None = None
        self._epoch_images = 0
        self._epoch_t0 = time.perf_counter()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y, index = batch
        if self.trainer is not None and self.trainer.training:
            return self._train_view(x), y, index, x  # the raw images ride along (MethodBatch.raw)
        x = self.eval_augment(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y, index

    def _train_view(self, raw: torch.Tensor) -> torch.Tensor:
        """A training view of raw images: the augmentation, drawing from the epoch's generator."""
        x = self.train_augment(raw, generator=self._generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # -- steps ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, index, raw = batch
        mb = MethodBatch(x, y, index, self._generator, self.current_epoch, self.trainer.max_epochs or 1)
        mb.raw, mb.augment = raw, self._train_view
        out = self.method(self.model, mb)
        n = x.shape[0]
        acc = (out.logits.detach().argmax(1) == out.targets).float().mean()
        self._epoch_images += out.images if out.images is not None else n
        rate = self._epoch_images / max(1e-9, time.perf_counter() - self._epoch_t0)
        loss = out.loss.detach()
        # Step values stay local (no collective per step); epoch means are reduced across ranks.
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        self.log("img/s", rate, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("train/acc", acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        for key, value in out.parts.items():
            self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True, sync_dist=True)
        return out.loss

    def on_train_epoch_end(self) -> None:
        self.method.on_epoch_end(self.current_epoch)

    def _eval_step(self, batch: Any, metrics: _EvalMetrics, prefix: str) -> None:
        x, y, _ = batch
        logits = self.model(x)
        if self.temperature is not None:  # calibrated by `patchswap calibrate` (eval only, never training)
            logits = logits / self.temperature
        metrics.update(logits, y)
        for name in ("acc", "nll", "ece"):
            self.log(f"{prefix}/{name}", getattr(metrics, name), on_step=False, on_epoch=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        return configure_optimization(self.optim_cfg, self.model, self.trainer)
