"""Lightning glue shared by every job: the trainer, run callbacks, the run directory, quiet logs.

Training, evaluation and dense transfer build their Lightning trainer, their checkpoints and their
run directory here, so each of those is written once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from patchswap.engine.callbacks import FAULT_ENV, EpochMetricsCSV, FaultInjection
from patchswap.engine.checkpoint import AtomicCheckpointIO
from patchswap.engine.config import TrainerSection
from patchswap.runs import (
    load_checkpoint,
)

__all__ = [
    "keep_freed_memory",
    "RunError",
    "fit_on_all_ranks",
    "launcher_rank",
    "lightning_trainer",
    "prepare_run_dir",
    "quiet_lightning",
    "resolve_device",
    "run_callbacks",
    "split_metrics",
]


class RunError(RuntimeError):
    """A run cannot start or continue as asked (existing run dir, nothing to resume, ...)."""


def lightning_trainer(
    t: TrainerSection, run_dir: Path | None, *, callbacks: list | None = None, fit: bool = True
) -> L.Trainer:
    """The Lightning trainer of a run (``fit``), or a one-device evaluator with exact metrics."""
    devices: Any = int(t.devices) if str(t.devices).isdigit() else t.devices
    strategy = t.strategy
    if not fit:  # evaluation after (or without) training: one device in this process, exact metrics
        devices, strategy = 1, "auto"
    limit: Any = int(t.limit_train_batches) if t.limit_train_batches > 1 else t.limit_train_batches
    cbs = list(callbacks or [])
    if t.progress_bar and fit:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps // 4)))
    logger: Any = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="") if fit else False
    return L.Trainer(
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=t.num_nodes if fit else 1,
        benchmark=t.cudnn_benchmark,
        precision=t.precision,  # type: ignore[arg-type]
        callbacks=cbs,
        logger=logger,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # our batch samplers shard pairs themselves
        enable_progress_bar=t.progress_bar and fit,
        enable_model_summary=False,
        enable_checkpointing=fit,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=limit,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=t.val_every_n_epochs,
        deterministic=t.deterministic,
        default_root_dir=str(run_dir) if run_dir else None,
    )


def run_callbacks(
    run_dir: Path, monitor: str | None, early_stopping_patience: int = 0
) -> tuple[ModelCheckpoint, list[Any]]:
    """Best/last checkpoints (selected on ``monitor``), metrics.csv, early stopping, fault injection.

    ``best.ckpt`` is written when validation improves; ``last.ckpt`` at the end of every training
    epoch by a checkpoint of its own, because Lightning's ``save_last`` only saves on validation
    epochs when validation runs every n > 1 epochs, and a killed run would lose up to n - 1 epochs.
    """
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="best",
        monitor=monitor,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    last = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="last",
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks: list[Any] = [checkpoint, last, EpochMetricsCSV(run_dir / "metrics.csv")]
    if early_stopping_patience and monitor:
        callbacks.append(EarlyStopping(monitor, mode="max", patience=early_stopping_patience))
    if os.environ.get(FAULT_ENV):
        callbacks.append(FaultInjection(int(os.environ[FAULT_ENV])))
    return checkpoint, callbacks


def fit_on_all_ranks(trainer: L.Trainer, run: Any, resume_from: Path | None) -> bool:
    """Fit ``run.module`` on ``run.datamodule``; True in the process that evaluates and writes (rank 0)."""
    trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=str(resume_from) if resume_from else None)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Training is over: rank 0 evaluates alone, so metrics must not wait for other ranks.
        torch.distributed.destroy_process_group()
    return trainer.is_global_zero


def prepare_run_dir(run_dir: Path, cfg: Any, *, resume: bool, command: str) -> Path:
    """Refuse to overwrite a run or to resume nothing; write the resolved config. Returns last.ckpt."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        if not last.exists():
            raise RunError(
                f"nothing to resume in {run_dir}: no checkpoints/last.ckpt (the run stopped before its first "
                f"epoch ended); start it again with: patchswap {command} --config {run_dir / 'config.yaml'}"
            )
        load_checkpoint(last)  # fails early and clearly on a truncated file
    elif last.exists():
        raise RunError(
            f"{run_dir} already holds a run; continue it with `patchswap {command} --resume {run_dir}` or "
            "choose another --trainer.run_dir"
        )
    if launcher_rank() == 0:  # DDP children re-run this command: only the first process writes
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.dump(run_dir / "config.yaml")
    return last


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's start-up notices (GPU available, tips) say nothing the user asked about."""
    names = [
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    ]
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")
        warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
        # The run's checkpoints/ folder is patchswap's own: every resume finds it full, as it should.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        try:
            yield
        finally:
            for n, lvl in old.items():
                logging.getLogger(n).setLevel(lvl)


def split_metrics(results: list[dict[str, float]], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for res in results:
        for k, v in res.items():
            if k.startswith(prefix + "/"):
                out[k.split("/", 1)[1]] = float(v)
    return out


def launcher_rank() -> int:
    """Global rank as set by Lightning's DDP launcher, torchrun or SLURM (0 before any launch)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def resolve_device(accelerator: str) -> torch.device:
    """The device the evaluation suite runs on, from ``trainer.accelerator`` (auto: GPU when present)."""
    acc = str(accelerator).lower()
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if acc == "mps" or (acc == "auto" and mps is not None and mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS after every batch.

    The suite allocates and frees the same large tensors hundreds of thousands of times; with glibc's
    defaults each round trip costs fresh page faults (a third of the CPU time of a forward pass on a
    small model). Linux/glibc only; elsewhere nothing happens.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 2**31 - 1)
        libc.mallopt(m_top_pad, 256 * 1024 * 1024)
    except (OSError, AttributeError):
        pass
