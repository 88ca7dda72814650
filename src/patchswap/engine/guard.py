"""What keeps a long run safe: checkpoints inside an epoch, a clean stop on signals, a stop on NaN.

:class:`RunGuard` is one Lightning callback (a ``Checkpoint``, so Lightning runs its epoch-end hook
after the module's, like its own ``ModelCheckpoint``):

- ``trainer.checkpoint_every_n_steps`` / ``trainer.checkpoint_every_minutes`` write ``last.ckpt``
  inside an epoch (through the atomic checkpoint I/O). With ``trainer.keep_last_k`` > 0 each such
  checkpoint is ``step-NNNNNNNNN.ckpt`` and ``last.ckpt`` a hard link to the newest; older step files
  beyond k are deleted. No step checkpoint is written at an epoch's last batch: the epoch-end
  ``last.ckpt`` follows at once, and Lightning resumes a checkpoint of a last batch past the epoch's
  end (skipping its validation).
- SIGTERM, SIGINT and SIGUSR1 ask for a checkpoint at the next step boundary (at an epoch's last
  batch: at the epoch's end, after validation), then the run stops with :class:`TrainingStopped`
  (exit status 75) and a message that gives the command that resumes it. A second SIGINT stops at once
  (status 130). With ``trainer.requeue`` under SLURM the job is requeued after the checkpoint.
- A loss that is not finite stops the run (``trainer.on_nonfinite stop``, :class:`TrainingDiverged`,
  exit status 65) before any checkpoint of the diverged weights is written, or skips that step's
  update (``skip_step``). On the CPU the check runs every step; on an accelerator the first bad step
  is recorded on the device and read where the host waits anyway (every ``log_every_n_steps`` steps,
  before a checkpoint, at validation and at the epoch's end), so training never waits for it. Before
  every write the weights are checked too (in both modes): an update can overflow them while its
  loss was finite.

Under DDP the ranks agree (one all-reduce) on stopping and on time-based checkpoints every
``log_every_n_steps`` steps; step-count checkpoints need no agreement. An error raised on one rank
alone (a failed checkpoint write: only rank 0 writes) takes down the ranks Lightning launched, instead
of leaving them at the barrier after the save.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint

from patchswap.engine.config import TrainerSection
from patchswap.engine.errors import EXIT_HARD_INTERRUPT, TrainingDiverged, TrainingStopped
from patchswap.losses import reads_values_on
from patchswap.runs import link_over

__all__ = ["STOP_SIGNALS", "RunGuard", "step_checkpoints"]

STOP_SIGNALS = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGUSR1")) if s is not None
)
_STEP_PREFIX = "step-"


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite: one host read (a sync on a GPU).

    The largest magnitude over all of them (torch's foreach max-norm, a few kernels for any number of
    tensors; a NaN or an infinity anywhere makes it non-finite, and a maximum cannot overflow as a sum
    could in fp16) instead of two small ops per tensor: 0.8 against 4.8 ms for resnet8's 176 tensors
    on a 2-core CPU.
    """
    tensors = list(tensors)
    max_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch 2.6 and later
    if max_norm is None:
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True
    return bool(max_norm(tensors, float("inf")).isfinite())


def _weights_finite(module: torch.nn.Module) -> bool:
    """Whether every floating-point tensor of the module's state (weights, buffers, EMA) is finite."""
    return _all_finite(t for t in module.state_dict().values() if t.is_floating_point())


def step_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """The step checkpoints of a run, newest first."""
    return sorted(Path(ckpt_dir).glob(f"{_STEP_PREFIX}*.ckpt"), reverse=True)


def _loss_of(outputs: Any) -> torch.Tensor | None:
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    return loss if isinstance(loss, torch.Tensor) else None


class RunGuard(Checkpoint):
    """Mid-epoch checkpoints, signals and non-finite losses of one training run (see the module doc)."""

    def __init__(self, run_dir: str | Path, t: TrainerSection, *, resume_command: str) -> None:
        self.ckpt_dir = Path(run_dir) / "checkpoints"
        self.every_n = max(0, int(t.checkpoint_every_n_steps))
        self.every_s = max(0.0, float(t.checkpoint_every_minutes) * 60.0)
        self.keep = max(0, int(t.keep_last_k))
        self.skip_nonfinite = t.on_nonfinite == "skip_step"
        self.requeue = bool(t.requeue)
        self.sync_every = max(1, int(t.log_every_n_steps))
        self.resume_command = resume_command
        self.precision = t.precision
        self._signal: int | None = None
        self._stop_at_epoch_end = False
        self._old_handlers: dict[int, Any] = {}
        self._last_save = time.monotonic()
        self._bad_step: torch.Tensor | None = None  # device-side: first non-finite step, -1 while none
        self.skipped_steps = 0

    # -- signals ---------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._signal is not None and signum == signal.SIGINT:
            print(
                f"\nsecond {name}: stopping now, without a checkpoint of this step; the newest checkpoint "
                f"resumes with: {self.resume_command}",
                file=sys.stderr,
                flush=True,
            )
            os._exit(EXIT_HARD_INTERRUPT)
        if self._signal is None:
            print(
                f"\n{name} received: writing a checkpoint at the end of this step, then stopping "
                "(Ctrl-C again stops at once)",
                file=sys.stderr,
                flush=True,
            )
        self._signal = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_save = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:  # replaces Lightning's SIGTERM notifier: we stop at a step boundary
                self._old_handlers[s] = signal.signal(s, self._on_signal)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for s, handler in self._old_handlers.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._old_handlers = {}

    # -- agreement between ranks ---------------------------------------------------------------
    @staticmethod
    def _agree(trainer: L.Trainer, values: list[int]) -> list[int]:
        """The maximum of each value over the ranks (the values themselves in one process)."""
        if trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return values
        t = torch.tensor(values, dtype=torch.long, device=trainer.strategy.root_device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return [int(v) for v in t.tolist()]

    # -- non-finite losses -----------------------------------------------------------------------
    def _track_loss(self, trainer: L.Trainer, loss: torch.Tensor) -> None:
        step = trainer.global_step
        if reads_values_on(loss) and trainer.world_size <= 1:
            value = float(loss)  # a host read where it costs nothing: no tensor ops (0.5 us against 20)
            if not math.isfinite(value):
                self._diverged(trainer, step, value)
            return
        bad = ~torch.isfinite(loss.detach())
        if self._bad_step is None or self._bad_step.device != loss.device:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        first = (self._bad_step < 0) & bad
        self._bad_step = torch.where(first, self._bad_step.new_full((), step), self._bad_step)

    def _check_nonfinite(self, trainer: L.Trainer, *, before_write: bool = False) -> None:
        """Read the recorded first bad step (a host-device sync: only where one happens anyway); before a
        checkpoint write, also check the weights themselves: an update can overflow them while the loss
        it came from was finite (a huge learning rate), and such weights must not be written either."""
        bad = -1
        if not self.skip_nonfinite and self._bad_step is not None:
            bad = int(self._bad_step)
        weights_bad = int(before_write and not _weights_finite(trainer.lightning_module))
        bad_plus, weights_bad = self._agree(trainer, [bad + 1, weights_bad])
        if bad_plus > 0:
            self._diverged(trainer, bad_plus - 1, float("nan"))
        if weights_bad:
            self._diverged(trainer, trainer.global_step, float("nan"), weights=True)

    def _diverged(self, trainer: L.Trainer, step: int, value: float, *, weights: bool = False) -> None:
        last = self.ckpt_dir / "last.ckpt"
        kept = (
            f"{last} holds the last checkpoint written before it"
            if last.exists()
            else "no checkpoint was written before it"
        )
        what = "NaN" if math.isnan(value) else ("infinite" if math.isinf(value) else "not finite")
        happened = (
            f"the weights became not finite at step {step} (an update overflowed; its loss was finite)"
            if weights
            else f"the training loss became {what} at step {step}"
        )
        module: Any = trainer.lightning_module
        lr = getattr(getattr(module, "optim_cfg", None), "lr", None)
        raise TrainingDiverged(
            f"{happened} (epoch {trainer.current_epoch + 1}); "
            f"training stopped there and {kept}. Likely causes: a learning rate too high for this model "
            f"and batch size (optim.lr = {lr}: try it 10x lower, or optim.warmup_epochs), or a precision "
            f"too narrow (trainer.precision = {self.precision}: try bf16-mixed or 32-true). "
            "trainer.on_nonfinite skip_step skips such steps instead of stopping"
        )

    def idle_step_hooks(self) -> frozenset[str]:
        """The per-step hooks that return at once in this run: the direct training step
        (:mod:`patchswap.engine.lean_loop`) leaves them out (a subclass that gives one of them work must
        leave it out of this set)."""
        return frozenset() if self.skip_nonfinite else frozenset({"on_before_optimizer_step"})

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        if not self.skip_nonfinite:
            return
        grads = (p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None)
        if not _all_finite(grads):  # skip_step reads this every step (a host-device sync on an accelerator)
            for g in optimizer.param_groups:
                for p in g["params"]:
                    p.grad = None  # SGD and AdamW leave a parameter without a gradient untouched
            self.skipped_steps += 1
            print(
                f"step {trainer.global_step}: the loss or its gradients are not finite; "
                "this step's update is skipped (trainer.on_nonfinite skip_step)",
                file=sys.stderr,
                flush=True,
            )

    # -- checkpoints -----------------------------------------------------------------------------
    def _save(self, trainer: L.Trainer, *, step_file: bool) -> Path:
        self._check_nonfinite(trainer, before_write=True)  # never write diverged weights over finite ones
        last = self.ckpt_dir / "last.ckpt"
        if self.keep and step_file:
            path = self.ckpt_dir / f"{_STEP_PREFIX}{trainer.global_step:09d}.ckpt"
            trainer.save_checkpoint(path)
            if trainer.is_global_zero:
                link_over(path, last)
                for old in step_checkpoints(self.ckpt_dir)[self.keep :]:
                    old.unlink(missing_ok=True)
        else:
            trainer.save_checkpoint(last)
        self._last_save = time.monotonic()
        return last

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = _loss_of(outputs)
        if loss is not None and not self.skip_nonfinite:
            self._track_loss(trainer, loss)
        step = trainer.global_step
        stop = int(self._signal is not None)
        time_due = int(bool(self.every_s) and time.monotonic() - self._last_save >= self.every_s)
        if trainer.world_size > 1:  # agree on stopping and time: every sync_every steps only
            stop, time_due = self._agree(trainer, [stop, time_due]) if step % self.sync_every == 0 else (0, 0)
        elif loss is not None and not reads_values_on(loss) and step % self.sync_every == 0:
            self._check_nonfinite(trainer)
        if trainer.world_size > 1 and step % self.sync_every == 0:
            self._check_nonfinite(trainer)
        count_due = bool(self.every_n) and step % self.every_n == 0
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._stop_at_epoch_end = bool(stop)  # the epoch-end checkpoint follows at once
            return
        if not (stop or time_due or count_due):
            return
        path = self._save(trainer, step_file=True)
        if stop:
            self._stop(trainer, path)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_nonfinite(trainer, before_write=True)  # before best.ckpt can be written

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_nonfinite(trainer, before_write=True)  # before the epoch's best.ckpt and last.ckpt

    def finish_epoch(self, trainer: L.Trainer) -> None:
        """After the epoch's best and last checkpoints (see :attr:`after_checkpoints`): stop if asked."""
        if self._stop_at_epoch_end:
            self._stop(trainer, self.ckpt_dir / "last.ckpt")

    @property
    def after_checkpoints(self) -> Checkpoint:
        """The callback to list after the run's ModelCheckpoints: a stop asked at an epoch's last batch
        happens once they have written the epoch's checkpoints."""
        return _AfterCheckpoints(self)

    def _stop(self, trainer: L.Trainer, path: Path) -> None:
        name = signal.Signals(self._signal).name if self._signal is not None else "a signal on another rank"
        requeued = ""
        if self.requeue and trainer.is_global_zero and os.environ.get("SLURM_JOB_ID"):
            job = os.environ.get("SLURM_ARRAY_JOB_ID")
            job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ["SLURM_JOB_ID"]
            ok = subprocess.call(["scontrol", "requeue", job]) == 0
            requeued = f"; SLURM job {job} {'requeued' if ok else 'could NOT be requeued'}"
        raise TrainingStopped(
            f"stopped by {name} at step {trainer.global_step} (epoch {trainer.current_epoch + 1}) after "
            f"writing {path}{requeued}. Continue with: {self.resume_command}"
        )

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Under DDP, an error raised on this rank alone (a failed checkpoint write: only rank 0 writes)
        leaves the other ranks waiting at the next collective (Lightning's barrier after the save): with
        NCCL until its timeout. Take down the ranks this process launched, so the run ends with this
        error and its exit status. Stops and divergence are agreed by every rank: nothing to do."""
        if trainer.world_size <= 1 or isinstance(exception, (TrainingStopped, TrainingDiverged)):
            return
        kill = getattr(trainer.strategy.launcher, "kill", None)  # rank 0 of Lightning's own launcher
        if kill is not None and getattr(trainer.strategy.launcher, "procs", None):
            kill(getattr(signal, "SIGKILL", signal.SIGTERM))
        # (torchrun and SLURM end the other ranks themselves when this one exits non-zero)

    def state_dict(self) -> dict[str, Any]:
        return {}


class _AfterCheckpoints(Checkpoint):
    def __init__(self, guard: RunGuard) -> None:
        self.guard = guard

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.guard.finish_epoch(trainer)
