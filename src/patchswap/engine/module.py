"""The classification LightningModule: device-side augmentation, the method's step, exact eval metrics.

Its randomness comes from :mod:`patchswap.engine.seeded`, its optimizer from
:mod:`patchswap.engine.optimization`.

A training step never waits for the device: nothing in it reads a device value on the host. The
step's loss, accuracy and method parts are summed on the device (one ``stack`` and one ``add_`` per
step) and published once, as epoch means, at the epoch's last step (:mod:`.epoch_values`); the
learning rate and images/s are host numbers; the progress bar reads ``step_loss`` every few steps
without waiting (:mod:`patchswap.engine.progress`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from patchswap.data import DeviceAugment
from patchswap.engine.config import OptimSection
from patchswap.engine.epoch_values import publish_epoch_values
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

    def reset(self) -> None:
        for metric in (self.acc, self.ece, self.nll):
            metric.reset()


class _EpochSums:
    """Named per-step values summed on the device, weighted by the step's batch size; means at epoch end.

    One ``stack`` and one in-place add per step, whatever the number of values, and no host read.
    Steps are grouped by the names they report, so a step that reports other parts is still counted.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[str, ...], list[Any]] = {}

    def add(self, values: dict[str, torch.Tensor], n: int) -> None:
        names = tuple(values)
        with torch.no_grad():  # no detach per value; 0-d values (the usual case) are stacked as they are
            parts = list(values.values())
            if any(v.dim() for v in parts):
                parts = [v.reshape(()) for v in parts]
            vec = torch.stack(parts)
            if vec.dtype != torch.float32:
                vec = vec.float()
            group = self._groups.get(names)
            if group is None:
                self._groups[names] = [vec * n, n]
            else:
                group[0].add_(vec, alpha=n)
                group[1] += n

    def means(self) -> dict[str, torch.Tensor]:
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for names, (vec, n) in self._groups.items():
            for name, value in zip(names, vec.unbind(), strict=True):
                sums[name] = sums[name] + value if name in sums else value
                counts[name] = counts.get(name, 0) + n
        return {name: sums[name] / counts[name] for name in sums}

    def __bool__(self) -> bool:
        return bool(self._groups)

    def clear(self) -> None:
        self._groups = {}

    def state(self) -> list[tuple[list[str], torch.Tensor, int]]:
        """The running sums on the host, for a checkpoint written inside an epoch."""
        return [(list(names), vec.detach().cpu(), n) for names, (vec, n) in self._groups.items()]

    def load(self, state: list[tuple[list[str], torch.Tensor, int]], device: torch.device) -> None:
        self._groups = {tuple(names): [vec.to(device), int(n)] for names, vec, n in state}


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
        # A method's own buffers (PS-KD's past predictions) are each rank's state. DDP replaces every
        # buffer with rank 0's before each forward (broadcast_buffers), which would drop what a rank wrote
        # at its last step; the method merges them itself at the epoch's end (Method.on_epoch_end).
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            self, [f"method.{name}" for name, _ in method.named_buffers(recurse=False)]
        )
        self.train_augment = train_augment
        self.eval_augment = eval_augment
        self.optim_cfg = optim
        self.seed = seed
        self.channels_last = channels_last
        self.val_metrics = _EvalMetrics(num_classes)
        self.test_metrics = _EvalMetrics(num_classes)
        self._generator: torch.Generator | None = None
        self._epoch_sums = _EpochSums()

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
        tally = self.tally
        tally.images += out.images if out.images is not None else n
        loss = tally.step_loss = out.loss.detach()
        acc = (out.logits.argmax(1) == out.targets).float().mean()  # integer argmax: no graph to leave out
        values = {"loss": loss, "acc": acc}
        values.update(out.parts)
        self._epoch_sums.add(values, n)
        tally.lr_sum += self.trainer.optimizers[0].param_groups[0]["lr"]  # a host number: no device work
        tally.lr_steps += 1
        return out.loss

    @property
    def step_loss(self) -> torch.Tensor | None:
        """The last step's loss, on the device: the progress bar reads it every few steps."""
        return self.tally.step_loss

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()  # a fresh tally: images, lr sums
        self._epoch_sums.clear()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The epoch's means are logged at its last step, not in on_train_epoch_end: Lightning calls the
        # callbacks' on_train_epoch_end (metrics.csv, the progress lines) before the module's.
        if self.trainer.fit_loop.epoch_loop.done:
            self._log_epoch_means()

    def _log_epoch_means(self) -> None:
        """The epoch's training means and mean learning rate, reduced across ranks in one collective and
        published at once (:mod:`patchswap.engine.epoch_values`, not a ``self.log`` per value)."""
        if not self._epoch_sums:
            return
        values: dict[str, torch.Tensor | float] = {
            f"train/{key}": value for key, value in self._epoch_sums.means().items()
        }
        values["lr"] = self.tally.lr_sum / max(1, self.tally.lr_steps)
        publish_epoch_values(self.trainer, values, self.device)
        self._epoch_sums.clear()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_means()  # an epoch that ended without its last step being seen as such
        self.method.on_epoch_end(self.current_epoch)

    def method_rank_state(self) -> Any:
        return self.method.rank_state()

    def epoch_log_state(self) -> Any:
        return {"sums": self._epoch_sums.state(), "lr": (self.tally.lr_sum, self.tally.lr_steps)}

    def load_epoch_log_state(self, state: Any) -> None:
        self._epoch_sums.load(state["sums"], self.device)
        self.tally.lr_sum, self.tally.lr_steps = float(state["lr"][0]), int(state["lr"][1])

    def load_method_rank_states(self, states: list[Any], rank: int) -> None:
        self.method.load_rank_states(states, rank, self.device)

    def _eval_step(self, batch: Any, metrics: _EvalMetrics) -> None:
        x, y, _ = batch
        logits = self.model(x)
        if self.temperature is not None:  # calibrated by `patchswap calibrate` (eval only, never training)
            logits = logits / self.temperature
        metrics.update(logits, y)

    def _log_eval(self, metrics: _EvalMetrics, prefix: str) -> None:
        """The split's metrics, logged once at its end: computed (synced across ranks: sharded evaluation
        stays exact) and reset here. Not per batch: each ``self.log`` costs about a millisecond of
        Lightning's bookkeeping, three per batch."""
        # No batch on this split: nothing to log. With several ranks every rank computes all the same
        # (compute is a collective, and sharding gives each rank batches).
        if not metrics.acc.update_called and self.trainer.world_size == 1:
            return
        for name in ("acc", "nll", "ece"):
            self.log(f"{prefix}/{name}", getattr(metrics, name).compute(), on_step=False, on_epoch=True)
        metrics.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_eval(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_eval(self.test_metrics, "test")

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        return configure_optimization(self.optim_cfg, self.model, self.trainer)
