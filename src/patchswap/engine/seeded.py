"""Training randomness derived from (seed, epoch, step), shared by the classification and dense modules.

Randomness is re-derived at the start of every epoch -- the augmentation and swap generator, the
global RNG (dropout) and the batch sampler -- and the global RNG again at every step, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have. A checkpoint
written inside an epoch also holds the state of the epoch's generator (:data:`RESUME_KEY`): Lightning
does not call ``on_train_epoch_start`` when it restarts mid-epoch, so the generator is restored from
that state instead of being re-derived.

Under DDP each rank draws its own augmentation, swaps and dropout (its rank is one more key of those
streams; a single process keeps the streams it always had), and a checkpoint holds every rank's
generator state, gathered when it is written (every rank takes part in a save), so each rank resumes
its own stream.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch

from patchswap.seeding import derive_seed, generator, step_seed

__all__ = [
    "METHOD_RANKS_KEY",
    "RESUME_KEY",
    "EpochTally",
    "SeededTraining",
    "seed_step",
    "start_epoch_randomness",
]

RESUME_KEY = "patchswap_epoch_generator"
"""Checkpoint key of ``{"epoch": E, "state": ByteTensor}``: the epoch's generator at the checkpoint."""

METHOD_RANKS_KEY = "patchswap_method_rank_states"
"""Checkpoint key of every rank's ``Method.rank_state()`` at the save, under DDP (absent when all None)."""


# The streams of a training run, named (seed, epoch, purpose[, step]) (see patchswap.seeding).
_EPOCH_GLOBAL = 0  # torch's global RNG at the start of an epoch
_EPOCH_AUGMENT = 1  # the epoch's generator for device-side augmentation and swaps
_STEP_GLOBAL = 2  # torch's global RNG for one training step (dropout, stochastic depth)


def _ranks(module: L.LightningModule) -> tuple[int, int]:
    """(world size, this process's rank); (1, 0) outside a trainer."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return 1, 0
    return trainer.world_size, trainer.global_rank


def _rank_key(module: L.LightningModule) -> tuple[int, ...]:
    """The rank as a stream key under DDP; nothing in one process (its streams stay as they were)."""
    world, rank = _ranks(module)
    return (rank,) if world > 1 else ()


def start_epoch_randomness(module: L.LightningModule, seed: int) -> torch.Generator:
    """Re-derive an epoch's randomness from (seed, epoch): the batch sampler's order, the global RNG
    (dropout) and a fresh generator for augmentation and swaps (returned, one per rank), so a resumed
    run continues exactly as the uninterrupted one would have."""
    epoch = module.current_epoch
    sampler = getattr(getattr(module.trainer, "datamodule", None), "train_sampler", None)
    if sampler is not None:
        sampler.set_epoch(epoch)
    rank = _rank_key(module)
    torch.manual_seed(derive_seed(seed, epoch, _EPOCH_GLOBAL, *rank))
    return generator(seed, epoch, _EPOCH_AUGMENT, *rank, device=module.device)


def seed_step(module: L.LightningModule, seed: int, batch_idx: int) -> None:
    """Seed the global RNG (dropout, stochastic depth) for one training step from (seed, epoch, step).

    Per step rather than per epoch: the DataLoader draws from the global RNG when it makes its
    iterator, at a moment that differs between a fresh and a resumed run.

    Cheap, as it runs every step: the epoch's base seed ``derive_seed(seed, epoch, _STEP_GLOBAL)`` is
    derived once per epoch (numpy's SeedSequence) and cached on the module; each step's seed is
    :func:`patchswap.seeding.step_seed` of it (integer arithmetic, about a microsecond), so it stays a
    pure function of (seed, epoch, step). Only the generators this
    process draws from are seeded: the CPU's and, once CUDA is initialised, each CUDA device's.
    ``torch.manual_seed`` would also queue a lazy seeding call (with a formatted stack trace) for
    every backend that is not initialised, about 0.15 ms and a growing queue per step.
    """
    epoch = module.current_epoch
    cached = module.__dict__.get("_step_seed_base")
    if cached is None or cached[0] != (seed, epoch):
        cached = ((seed, epoch), derive_seed(seed, epoch, _STEP_GLOBAL, *_rank_key(module)))
        module.__dict__["_step_seed_base"] = cached
    seed_now = step_seed(cached[1], batch_idx)
    torch.default_generator.manual_seed(seed_now)
    device = module.device
    if torch.cuda.is_initialized():
        for cuda_generator in torch.cuda.default_generators:
            cuda_generator.manual_seed(seed_now)
    elif device.type not in ("cpu", "cuda"):
        torch.manual_seed(seed_now)  # another accelerator (mps, xpu, ...): seed every backend


@dataclass(slots=True)
class EpochTally:
    """This process's running counts of the current epoch, in a plain object: they change at every step,
    and each write to a LightningModule's attribute goes through ``nn.Module.__setattr__`` (2 us or
    more on a 2-core CPU against 50 ns on a plain object, five a step)."""

    images: int = 0  # images trained on (a pair's two views count twice)
    batches: int = 0  # batches trained on here (none in a run resumed from the epoch's end)
    t0: float = field(default_factory=time.perf_counter)  # the epoch's start on the host clock
    lr_sum: float = 0.0  # the optimizer's lr summed over the steps (the logged mean lr)
    lr_steps: int = 0
    step_loss: torch.Tensor | None = None  # the last step's loss, on the device (progress bar)


class SeededTraining(L.LightningModule):
    """Epoch hooks shared by the training modules: (seed, epoch, step)-derived randomness and a clock.

    Subclasses set ``self.seed`` and count their images in ``self.tally``; ``self._generator`` is the
    epoch's generator for augmentation and swaps.
    """

    seed: int
    _generator: torch.Generator | None = None

    _saved_generator: dict[str, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tally = EpochTally()

    def on_train_epoch_start(self) -> None:
        self._generator = start_epoch_randomness(self, self.seed)
        self.tally = EpochTally()

    def ran_batches_here(self) -> bool:
        """Whether this process trained on any batch of the current epoch (False for a run resumed from
        a checkpoint written at its epoch's end, whose batches all ran before the restart)."""
        return self.tally.batches > 0

    _saved_method_states: list[Any] | None = None

    def method_rank_state(self) -> Any:
        """This rank's part of the training method's state (``Method.rank_state``); None here."""
        return None

    def load_method_rank_states(self, states: list[Any], rank: int) -> None:
        """Give the method back its part of the state gathered at the save (no method here)."""

    def epoch_log_state(self) -> Any:
        """This rank's running sums of the epoch's logged means, so that an epoch resumed inside still
        logs the means of all its steps; None here."""
        return None

    def load_epoch_log_state(self, state: Any) -> None:
        """Continue the epoch's running sums from a checkpoint written inside it (nothing here)."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._generator is None:
            return
        state, log = self._generator.get_state(), self.epoch_log_state()
        tally = self.tally
        clock = (tally.images, time.perf_counter() - tally.t0)  # the epoch's images and seconds
        saved: dict[str, Any] = {"epoch": self.current_epoch, "state": state, "log": log, "clock": clock}
        world, _ = _ranks(self)
        if world > 1:  # a collective: every rank dumps the checkpoint, rank 0 alone writes it
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, (state, self.method_rank_state(), log, clock))
            saved["rank_states"] = [generator for generator, _, _, _ in gathered]
            saved["rank_logs"] = [rank_log for _, _, rank_log, _ in gathered]
            saved["rank_clocks"] = [rank_clock for _, _, _, rank_clock in gathered]
            methods = [method for _, method, _, _ in gathered]
            if any(m is not None for m in methods):
                checkpoint[METHOD_RANKS_KEY] = methods
        checkpoint[RESUME_KEY] = saved

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._saved_generator = checkpoint.get(RESUME_KEY)
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        self._saved_method_states = checkpoint.get(METHOD_RANKS_KEY) if fitting else None  # not for eval

    def _saved_state(self, key: str = "state") -> Any:
        """This rank's generator state (``key="state"``), epoch sums (``"log"``) or the epoch's images and
        seconds so far (``"clock"``) in the loaded checkpoint, if it was written in this epoch."""
        saved = self._saved_generator
        if saved is None or int(saved["epoch"]) != self.current_epoch:
            return None
        world, rank = _ranks(self)
        if world == 1:
            return saved.get(key)
        states = saved.get({"state": "rank_states", "log": "rank_logs", "clock": "rank_clocks"}[key])
        return states[rank] if states is not None and len(states) == world else None

    def on_train_start(self) -> None:
        """A restart inside an epoch skips ``on_train_epoch_start``: continue the epoch's generator. Under
        DDP each rank also takes back its part of the method's state (the checkpoint's state_dict is rank
        0's), at any restart with the number of ranks that wrote it."""
        world, rank = _ranks(self)
        methods, self._saved_method_states = self._saved_method_states, None
        if methods is not None and len(methods) == world:
            self.load_method_rank_states(methods, rank)
        elif methods is not None:
            warnings.warn(
                f"this checkpoint holds the method state of {len(methods)} processes and the run resumes on "
                f"{world}: every process starts from rank 0's (e.g. DLB's kept batch), so the resumed run is "
                "close to, not identical with, the uninterrupted one",
                stacklevel=2,
            )
        loop = self.trainer.fit_loop
        if not loop.restarted_mid_epoch:
            return
        clock = self._saved_state("clock")  # the epoch's images and seconds count the part before the stop
        images, seconds = clock if clock is not None else (0, 0.0)
        self.tally = EpochTally(images=int(images), t0=time.perf_counter() - float(seconds))
        self._generator = start_epoch_randomness(self, self.seed)
        log = self._saved_state("log")
        if log is not None:  # the means logged at the epoch's end cover the steps before the restart too
            self.load_epoch_log_state(log)
        state = self._saved_state()
        if state is not None:
            self._generator.set_state(state)
        else:  # an older checkpoint, or another number of ranks: the epoch's stream from its start
            warnings.warn(
                "this checkpoint was written inside an epoch without the state of this process's random "
                "generator (an older version, or another number of devices): the resumed epoch's "
                "augmentation differs from the uninterrupted run's",
                stacklevel=2,
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        seed_step(self, self.seed, batch_idx)
        self.tally.batches += 1

    def epoch_throughput(self) -> tuple[int, float]:
        """Images trained on and seconds spent so far in the current epoch (this process)."""
        return self.tally.images, time.perf_counter() - self.tally.t0
