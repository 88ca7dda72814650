"""Callbacks that make a run directory self-explanatory: per-epoch metrics.csv, and a fault hook for tests."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L

from patchswap.engine.epoch_values import publish_epoch_values

__all__ = [
    "FAULT_ENV",
    "FAULT_SIGNAL_ENV",
    "EpochMetricsCSV",
    "FaultInjection",
    "read_metrics",
    "training_time",
]

FAULT_ENV = "PATCHSWAP_FAULT_AT_STEP"
FAULT_SIGNAL_ENV = "PATCHSWAP_FAULT_SIGNAL"  # which signal (default SIGKILL), e.g. SIGTERM


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv (none when it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _scalar(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class EpochMetricsCSV(L.Callback):
    """One row per epoch in ``metrics.csv`` (train and val metrics, lr, throughput).

    Appends across resumes; rows of epochs that a resumed run repeats are dropped first, so the
    file always describes the weights the run directory holds.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._validated_epoch = -1

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated_epoch = trainer.current_epoch

    def _read(self) -> list[dict[str, str]]:
        return read_metrics(self.path)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        head = [k for k in ("epoch", "step") if k in keys]
        keys = head + sorted(k for k in keys if k not in head)
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_fit_start: Lightning restores the loop state (current_epoch) of a resumed run only
        # after on_fit_start, so there every resumed run would look like epoch 0 and lose its rows.
        # The row of the current epoch stays: a checkpoint written at validation (best.ckpt, or
        # last.ckpt of runs made before last.ckpt was saved at every epoch end) resumes with that
        # epoch's batches done, and its row is the only record of them. A repeated epoch replaces it.
        if trainer.is_global_zero:
            rows = [r for r in self._read() if int(r["epoch"]) <= trainer.current_epoch]
            if rows or self.path.exists():
                self._write(rows)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs before the module's own epoch-end hook, so throughput is measured and logged here.
        throughput = getattr(pl_module, "epoch_throughput", None)
        images = None
        if throughput is not None:
            images, seconds = throughput()
            world = max(1, trainer.world_size)
            values = {
                "train/images_per_s": world * images / max(seconds, 1e-9),
                "train/epoch_seconds": seconds,
            }
            publish_epoch_values(trainer, values, pl_module.device)
        if trainer.sanity_checking:
            return
        # Every rank reads the metrics: reading computes (and syncs, for sync_dist values) the epoch's
        # metrics, a collective. Read on rank 0 alone, it would pair with whatever collective the other
        # ranks reach next (RunGuard's agreement at the epoch's end) and hang the run.
        metrics = dict(trainer.callback_metrics)
        if not trainer.is_global_zero:
            return
        rows = self._read()
        earlier = [r for r in rows if int(r["epoch"]) != trainer.current_epoch]
        ran = getattr(pl_module, "ran_batches_here", None)
        none_here = not ran() if ran is not None else images == 0
        if none_here and len(earlier) < len(rows):
            return  # resumed at this epoch's end: its batches ran (and were logged) before the restart
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in metrics.items():
            if key.endswith("_step") or key in ("img/s", "loss"):
                continue
            if key.startswith("val/") and self._validated_epoch != trainer.current_epoch:
                continue  # no validation this epoch (val_every_n_epochs): don't repeat stale values
            row[key.removesuffix("_epoch")] = round(_scalar(value), 6)
        self._write(earlier + [row])


class FaultInjection(L.Callback):
    """Sends the process SIGKILL (or ``PATCHSWAP_FAULT_SIGNAL``) at a global step, when
    ``PATCHSWAP_FAULT_AT_STEP`` is set.

    Exists for the resume tests: a real signal, not an exception Lightning could tidy up after. A
    signal other than SIGKILL is sent once; the run's own handler decides what it does.
    """

    def __init__(self, step: int, signum: int | None = None) -> None:
        self.step = step
        name = os.environ.get(FAULT_SIGNAL_ENV, "SIGKILL")
        self.signum = signum if signum is not None else int(getattr(signal, name))
        self._sent = False

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step and not self._sent:
            self._sent = self.signum != signal.SIGKILL
            os.kill(os.getpid(), self.signum)


def training_time(rows: list[dict[str, str]]) -> tuple[float, float]:
    """Seconds spent training and images trained on, summed over the rows of a metrics.csv."""
    seconds = sum(float(r.get("train/epoch_seconds") or 0) for r in rows)
    images = sum(
        float(r.get("train/images_per_s") or 0) * float(r.get("train/epoch_seconds") or 0) for r in rows
    )
    return seconds, images
