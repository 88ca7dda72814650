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
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from patchswap.engine.callbacks import FAULT_ENV, EpochMetricsCSV, FaultInjection
from patchswap.engine.checkpoint import AtomicCheckpointIO, LinkedCheckpoint
from patchswap.engine.config import TrainerSection
from patchswap.engine.errors import RunError
from patchswap.engine.lean_loop import install_lean_loop
from patchswap.engine.progress import interactive, progress_callback

RUN_FILES = ("config.yaml", "metrics.csv", "summary.json", "curves.png", "tensorboard", "checkpoints")
"""What a training run writes in its run directory (and what --overwrite removes, nothing else)."""

__all__ = [
    "RUN_FILES",
    "keep_freed_memory",
    "RunError",
    "check_writable",
    "clear_run",
    "cpu_has_native_bf16",
    "free_run_dir",
    "holds_run",
    "resolve_precision",
    "fit_on_all_ranks",
    "launcher_rank",
    "lightning_trainer",
    "prepare_run_dir",
    "quiet_lightning",
    "run_callbacks",
    "split_metrics",
]


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
    bar = t.progress_bar and interactive()  # a log file gets one line per epoch, not every redraw
    if fit:  # a bar refreshed every few steps, or one line per epoch (engine/progress.py)
        cbs.append(progress_callback(bar, refresh_rate=max(1, t.log_every_n_steps // 4)))
    logger: Any = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="") if fit else False
    plugins: list[Any] = [AtomicCheckpointIO()]
    if fit and getattr(t, "requeue", False):
        from lightning.fabric.plugins.environments import SLURMEnvironment

        if SLURMEnvironment.detect():  # Lightning's SLURM auto-requeue; our RunGuard owns the signals
            plugins.append(SLURMEnvironment(auto_requeue=True))
    trainer = L.Trainer(
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=t.num_nodes if fit else 1,
        benchmark=t.cudnn_benchmark,
        precision=resolve_precision(t.precision, t.accelerator)[0],  # type: ignore[arg-type]
        callbacks=cbs,
        logger=logger,
        plugins=plugins,
        use_distributed_sampler=False,  # our batch samplers shard pairs themselves
        enable_progress_bar=bar and fit,
        enable_model_summary=False,
        enable_checkpointing=fit,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=limit,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=t.val_every_n_epochs,
        deterministic=t.deterministic,
        default_root_dir=str(run_dir) if run_dir else None,
    )
    if fit:
        install_lean_loop(trainer, enabled=t.lean_loop)
    return trainer


def run_callbacks(
    run_dir: Path, monitor: str | None, early_stopping_patience: int = 0, *, guard: Any = None
) -> tuple[ModelCheckpoint, list[Any]]:
    """Best/last checkpoints (selected on ``monitor``), metrics.csv, early stopping, fault injection.

    ``guard`` (a :class:`patchswap.engine.guard.RunGuard`) comes before the checkpoints, so a loss that
    is not finite stops the run before they write, and a stop asked at an epoch's end writes first.

    ``best.ckpt`` is written when validation improves; ``last.ckpt`` at the end of every training
    epoch by a checkpoint of its own, because Lightning's ``save_last`` only saves on validation
    epochs when validation runs every n > 1 epochs, and a killed run would lose up to n - 1 epochs.
    Without validation (``monitor`` None) ``best.ckpt`` is a hard link to each epoch's ``last.ckpt``.
    """
    folder = str(run_dir / "checkpoints")
    last = ModelCheckpoint(
        dirpath=folder,
        filename="last",
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    best_options = dict(
        dirpath=folder,
        filename="best",
        monitor=monitor,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    if monitor is None:  # the best is the newest: a link to the epoch's last.ckpt, after it
        # At every epoch's end: left to Lightning, trainer.val_every_n_epochs > 1 would defer it to a
        # validation that never runs, and no best.ckpt would be written at all.
        checkpoint: ModelCheckpoint = LinkedCheckpoint(last, save_on_train_epoch_end=True, **best_options)
        saves = [last, checkpoint]
    else:
        checkpoint = ModelCheckpoint(**best_options)
        saves = [checkpoint, last]
    callbacks: list[Any] = [
        *([guard] if guard else []),
        *saves,
        EpochMetricsCSV(run_dir / "metrics.csv"),
    ]
    if guard:
        callbacks.append(guard.after_checkpoints)
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


def holds_run(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a run that trained (a last checkpoint or a summary)."""
    return (run_dir / "checkpoints" / "last.ckpt").exists() or (run_dir / "summary.json").exists()


def free_run_dir(default: Path) -> Path:
    """``default``, or ``default-2``, ``default-3``, ... : the first that holds no run and no config."""
    candidate, n = default, 1
    while holds_run(candidate) or (candidate / "config.yaml").exists():
        n += 1
        candidate = default.with_name(f"{default.name}-{n}")
    return candidate


def clear_run(run_dir: Path, *, remove_dir: bool = True) -> None:
    """Remove what a run wrote in ``run_dir`` (:data:`RUN_FILES`), and the folder (``remove_dir``) when
    that empties it."""
    import shutil

    for name in RUN_FILES:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if remove_dir:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when empty


def check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and write a file in it, or fail with a message that names the folder."""
    import tempfile

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir / "checkpoints"):
            pass
    except OSError as e:
        what = {
            "NotADirectoryError": "a file stands where a folder of that path must be",
            "FileExistsError": "a file of that name exists",
            "PermissionError": "permission denied",
        }.get(type(e).__name__, e.strerror or type(e).__name__)
        raise RunError(
            f"cannot write the run directory {run_dir} ({what}: {e.filename or run_dir}); choose another "
            "--trainer.run_dir or fix that folder's permissions"
        ) from None


def prepare_run_dir(run_dir: Path, cfg: Any, *, resume: bool, command: str, overwrite: bool = False) -> Path:
    """Refuse to overwrite a run (unless ``overwrite``) or to resume nothing; check that the folder is
    writable; write the resolved config of a new run. Returns last.ckpt.

    A resumed run's config is written later, by the caller, once its checkpoint has loaded and matched.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        if not last.exists():
            raise RunError(
                f"nothing to resume in {run_dir}: no checkpoints/last.ckpt (the run stopped before its first "
                f"checkpoint); start it again with: patchswap {command} --config {run_dir / 'config.yaml'} "
                "--overwrite"
            )
    elif holds_run(run_dir):
        if not overwrite:
            raise RunError(
                f"{run_dir} already holds a run; continue it with `patchswap {command} --resume {run_dir}`, "
                "replace it with --overwrite, or choose another --trainer.run_dir"
            )
        if launcher_rank() == 0:
            clear_run(run_dir)
    if launcher_rank() == 0:  # DDP children re-run this command: only the first process writes
        check_writable(run_dir)
        if not resume:
            cfg.dump(run_dir / "config.yaml")
    return last


_warned_bf16 = False


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bfloat16 arithmetic (AMX or AVX512-BF16), read from /proc/cpuinfo on Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: no cheap way to tell; fp32 is the safe default
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def _on_gpu(accelerator: str) -> bool:
    return str(accelerator).lower() in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(precision: str, accelerator: str) -> tuple[str, str]:
    """``trainer.precision`` as Lightning takes it, and why: ``auto`` becomes bf16-mixed on GPUs that
    support it and on CPUs with native bfloat16, 32-true elsewhere. An explicit bf16-mixed on a CPU
    without native bfloat16 warns (once per process) that it is emulated and slow."""
    global _warned_bf16
    acc = str(accelerator).lower()
    gpu = _on_gpu(acc)
    cpu = (
        not gpu
        and acc in ("auto", "cpu")
        and not (
            acc == "auto"
            and getattr(torch.backends, "mps", None) is not None
            and torch.backends.mps.is_available()
        )
    )
    if precision != "auto":
        if precision.startswith("bf16") and cpu and not cpu_has_native_bf16() and not _warned_bf16:
            _warned_bf16 = True
            warnings.warn(
                f"trainer.precision={precision} on a CPU without native bfloat16 (no AMX or AVX512-BF16): "
                "it is "
                "emulated and several times slower than fp32; use trainer.precision auto or 32-true",
                stacklevel=2,
            )
        return precision, "as set"
    if gpu:
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "GPU with bfloat16"
        return "32-true", "GPU without bfloat16"
    if cpu and cpu_has_native_bf16():
        return "bf16-mixed", "CPU with native bfloat16 (AMX or AVX512-BF16)"
    return "32-true", "no native bfloat16 on this device" if cpu else "not a CUDA GPU or CPU"


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
