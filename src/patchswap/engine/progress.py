"""What a training run shows while it trains: a progress bar, or one plain line per epoch.

* :class:`EpochProgressBar` (``trainer.progress_bar true``): Lightning's tqdm bar with the epoch and
  the total (``Epoch 21/30``), the time left for the whole fit, and the last step's loss and images/s,
  refreshed every ``refresh_rate`` steps. Reading the loss never waits for the device: a refresh
  starts a non-blocking copy of the loss to the host and shows the value of the previous copy once
  the device has finished it (:class:`HostScalar`).
* :class:`EpochLines` (``trainer.progress_bar false``, or stdout that is not a terminal): one line
  per epoch, e.g.
  ``epoch 3/30  loss 1.2031  acc 0.571  val acc 0.602 nll 1.164 ece 0.031  2,310 img/s  12.3 s  left 5:36``.

Both read epoch values (reduced once per epoch) from ``trainer.callback_metrics`` and images/s
from the module's host clock (``epoch_throughput``), so neither adds a host-device sync per step.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = [
    "EpochLines",
    "EpochProgressBar",
    "HostScalar",
    "format_duration",
    "interactive",
    "progress_callback",
]


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class HostScalar:
    """A device scalar shown on the host without waiting for the device.

    ``push(t)`` starts a non-blocking copy of ``t`` into pinned host memory and records an event;
    ``value`` is the newest copy the device has finished (one refresh behind on a busy GPU). CPU
    tensors are read at once (no device to wait for).
    """

    def __init__(self) -> None:
        self.value: float | None = None
        self._host: torch.Tensor | None = None
        self._event: Any = None

    def push(self, tensor: torch.Tensor | None) -> None:
        if tensor is None:
            return
        if tensor.device.type != "cuda":
            self.value = float(tensor.detach())
            return
        if self._event is not None:
            if not self._event.query():
                return  # the last copy is still queued: keep showing the value before it
            self.value = float(self._host)  # type: ignore[arg-type]  # host memory: no device wait
        if self._host is None:
            self._host = torch.empty((), dtype=torch.float32, pin_memory=True)
        self._host.copy_(tensor.detach().float(), non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record()


class FitClock:
    """Time left for the whole fit, from the steps done in this process (a resumed run: since its restart)."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._step0 = 0

    def start(self, trainer: L.Trainer) -> None:
        self._t0, self._step0 = time.perf_counter(), trainer.global_step

    def total_steps(self, trainer: L.Trainer) -> float:
        per_epoch = trainer.num_training_batches
        epochs = trainer.max_epochs or 1
        if not math.isfinite(per_epoch) or per_epoch <= 0:
            return math.inf
        total = per_epoch * epochs
        return min(total, trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else total

    def left(self, trainer: L.Trainer) -> float | None:
        done = trainer.global_step - self._step0
        total = self.total_steps(trainer)
        if done <= 0 or not math.isfinite(total):
            return None
        return (time.perf_counter() - self._t0) / done * max(0.0, total - trainer.global_step)


def _throughput(pl_module: L.LightningModule) -> float | None:
    measure = getattr(pl_module, "epoch_throughput", None)
    if measure is None:
        return None
    images, seconds = measure()
    return images / seconds if images and seconds > 0 else None


def _epoch_values(trainer: L.Trainer, prefix: str, names: tuple[str, ...]) -> dict[str, float]:
    """Epoch values logged under ``prefix/`` (reduced once per epoch, so reading them costs one sync)."""
    metrics = trainer.callback_metrics
    out = {}
    for name in names:
        value = metrics.get(f"{prefix}/{name}")
        if value is not None:
            out[name] = float(value)
    return out


class EpochProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar with ``Epoch i/N``, the fit's time left, values read without a sync per step."""

    def __init__(self, refresh_rate: int = 5) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.clock = FitClock()
        self.loss = HostScalar()
        self._epoch: dict[str, float] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.clock.start(trainer)
        self.loss = HostScalar()

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(batch_idx + 1, bar.total):
            self.loss.push(getattr(pl_module, "step_loss", None))
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = _epoch_values(trainer, "train", ("acc",))
        val = _epoch_values(trainer, "val", ("acc",))
        self._epoch = {**({"acc": acc["acc"]} if acc else {}), **({"val_acc": val["acc"]} if val else {})}
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items: dict[str, Any] = dict(super().get_metrics(trainer, pl_module))
        items.pop("v_num", None)
        if self.loss.value is not None:
            items["loss"] = f"{self.loss.value:.4g}"
        rate = _throughput(pl_module)
        if rate is not None:
            items["img/s"] = f"{rate:,.0f}"
        items.update({k: f"{v:.3f}" for k, v in self._epoch.items()})
        left = self.clock.left(trainer)
        if left is not None:
            items["left"] = format_duration(left)
        return items


class EpochLines(L.Callback):
    """One plain line per training epoch (for logs, and runs without a progress bar)."""

    def __init__(self, print_fn: Any = print) -> None:
        self.clock = FitClock()
        self._print = print_fn
        self._validated_epoch = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock.start(trainer)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    def line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        train = _epoch_values(trainer, "train", ("loss", "acc"))
        if "loss" in train:
            parts.append(f"loss {train['loss']:.4f}")
        if "acc" in train:
            parts.append(f"acc {train['acc']:.3f}")
        if self._validated_epoch == trainer.current_epoch:
            val = _epoch_values(trainer, "val", ("acc", "nll", "ece", "miou", "map"))
            if val:
                parts.append("val " + " ".join(f"{k} {v:.3f}" for k, v in val.items()))
        rate = _throughput(pl_module)
        if rate is not None:
            parts.append(f"{rate:,.0f} img/s")
        measure = getattr(pl_module, "epoch_throughput", None)
        if measure is not None:
            parts.append(f"{measure()[1]:.1f} s")
        left = self.clock.left(trainer)
        if left is not None:
            parts.append(f"left {format_duration(left)}")
        return "  ".join(parts)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # On every rank: reading the epoch's metrics syncs them (a collective) the first time.
        trainer.callback_metrics  # noqa: B018
        if trainer.is_global_zero:
            self._print(self.line(trainer, pl_module), flush=True)


def interactive() -> bool:
    """Whether a bar can redraw itself: stdout (where Lightning's tqdm bar draws) is a terminal, or a
    notebook renders it.

    Redirected to a file (``nohup``, a SLURM log, ``> train.log``) every refresh of a bar is kept as
    text, thousands of partial lines per run; one line per epoch is what such a log should hold.
    """
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def progress_callback(progress_bar: bool, refresh_rate: int) -> L.Callback:
    """The bar (``trainer.progress_bar true``, shown where it can redraw) or the per-epoch lines."""
    return EpochProgressBar(refresh_rate=refresh_rate) if progress_bar else EpochLines()
