"""The LightningModule: device-side augmentation, the method's step, metrics and the lr schedule.

Randomness is re-derived from (seed, epoch) at the start of every epoch -- the augmentation and swap
generator, the global RNG (dropout) and the batch sampler -- so a run resumed from an epoch-end
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from patchswap.data import DeviceAugment
from patchswap.engine.config import OptimSection
from patchswap.engine.loaders import IGNORE_LABEL
from patchswap.methods import Method, MethodBatch
from patchswap.seeding import derive_seed, generator

__all__ = [
    "ClassifierModule",
    "configure_optimization",
    "lr_factor",
    "seed_step",
    "start_epoch_randomness",
]


# The streams of a training run, named (seed, epoch, purpose[, step]) (see patchswap.seeding).
_EPOCH_GLOBAL = 0  # torch's global RNG at the start of an epoch
_EPOCH_AUGMENT = 1  # the epoch's generator for device-side augmentation and swaps
_STEP_GLOBAL = 2  # torch's global RNG for one training step (dropout, stochastic depth)


def start_epoch_randomness(module: L.LightningModule, seed: int) -> torch.Generator:
    """Re-derive an epoch's randomness from (seed, epoch): the batch sampler's order, the global RNG
    (dropout) and a fresh generator for augmentation and swaps (returned), so a resumed run continues
    exactly as the uninterrupted one would have."""
    epoch = module.current_epoch
    sampler = getattr(getattr(module.trainer, "datamodule", None), "train_sampler", None)
    if sampler is not None:
        sampler.set_epoch(epoch)
    torch.manual_seed(derive_seed(seed, epoch, _EPOCH_GLOBAL))
    return generator(seed, epoch, _EPOCH_AUGMENT, device=module.device)


def seed_step(module: L.LightningModule, seed: int, batch_idx: int) -> None:
    """Seed the global RNG (dropout, stochastic depth) for one training step from (seed, epoch, step).

    Per step rather than per epoch: the DataLoader draws from the global RNG when it makes its
    iterator, at a moment that differs between a fresh and a resumed run.
    """
    torch.manual_seed(derive_seed(seed, module.current_epoch, _STEP_GLOBAL, batch_idx))


def lr_factor(optim: OptimSection, step: int, steps_per_epoch: int, epochs: int) -> float:
    """Multiplier of the base lr at an optimizer step (per-step schedules, epoch-based milestones)."""
    epoch_f = step / max(1, steps_per_epoch)
    warm = optim.warmup_epochs
    if warm and epoch_f < warm:
        return (step + 1) / (warm * steps_per_epoch)
    if optim.schedule == "cosine":
        span = max(1e-8, epochs - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch_f - warm) / span)))
    if optim.schedule == "multistep":
        passed = sum(1 for m in optim.milestones if int(epoch_f) >= m)
        return optim.lr_decay**passed
    return 1.0


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


class SeededTraining(L.LightningModule):
    """Epoch hooks shared by the training modules: (seed, epoch, step)-derived randomness and a clock.

    Subclasses set ``self.seed`` and count ``self._epoch_images``; ``self._generator`` is the epoch's
    generator for augmentation and swaps.
    """

    seed: int
    _generator: torch.Generator | None = None
    _epoch_images: int = 0
    _epoch_t0: float = 0.0

    def on_train_epoch_start(self) -> None:
        self._generator = start_epoch_randomness(self, self.seed)
        self._epoch_images = 0
        self._epoch_t0 = time.perf_counter()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        seed_step(self, self.seed, batch_idx)

    def epoch_throughput(self) -> tuple[int, float]:
        """Images trained on and seconds spent so far in the current epoch (this process)."""
        return self._epoch_images, time.perf_counter() - self._epoch_t0


class ClassifierModule(SeededTraining):
    """Trains ``model`` with ``method``; evaluates plain classification on val and test."""

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
        metrics.update(self.model(x), y)
        for name in ("acc", "nll", "ece"):
            self.log(f"{prefix}/{name}", getattr(metrics, name), on_step=False, on_epoch=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        return configure_optimization(self.optim_cfg, self.model, self.trainer)


def configure_optimization(o: OptimSection, model: nn.Module, trainer: L.Trainer) -> dict[str, Any]:
    """Optimizer and per-step lr schedule of ``model``'s trainable parameters (Lightning's format)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "sgd":
        opt = torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    else:
        opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    epochs = trainer.max_epochs or 1
    total = max(1, int(trainer.estimated_stepping_batches))
    per_epoch = max(1, total // epochs)
    if o.schedule == "onecycle":
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=total)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(o, step, per_epoch, epochs))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
