"""Lightning checkpoint I/O that survives a kill (saves go through :func:`patchswap.runs.atomic_write`),
and the ``best.ckpt`` of a run without validation, which is the epoch's ``last.ckpt`` itself.

The checkpoint format itself (loading with a clear corrupt-file error, locating, weights) lives in
:mod:`patchswap.runs`; this module only plugs it into Lightning (``Trainer(plugins=[...])``, callbacks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from patchswap.engine.errors import CheckpointWriteError
from patchswap.runs import atomic_write, link_over, load_checkpoint

__all__ = ["AtomicCheckpointIO", "LinkedCheckpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O whose saves are atomic and whose loads name a corrupt file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f))
        except OSError as e:  # disk full, permissions, a vanished folder: say which file and what is left
            path = Path(path)
            kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
            raise CheckpointWriteError(
                f"could not write the checkpoint {path} ({e.strerror or type(e).__name__}); {kept}. "
                f"Free disk space or fix the permissions of {path.parent}, then resume the run"
            ) from e

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path, map_location=map_location)


class LinkedCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint that, when ``source`` (listed before it) has just saved at the same step, makes
    its file a hard link to that one instead of saving the same state a second time.

    For ``best.ckpt`` of a run without validation: the best checkpoint is then the newest, the very
    state ``last.ckpt`` holds, and a second save would pickle and fsync it again at every epoch's end
    (two saves were 3-4% of a short CPU epoch in benchmarks/overhead.py). A link is atomic like a save,
    and the next save of either name replaces that name alone. When ``source`` did not save at this
    step (a resumed run's first epoch end, say) it saves as any ModelCheckpoint.
    """

    def __init__(self, source: ModelCheckpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        if self.state_key == source.state_key:  # Lightning would refuse two callbacks with one state
            raise ValueError(
                "LinkedCheckpoint needs options that differ from its source's in its state key (monitor, "
                "mode, every_n_train_steps, every_n_epochs or train_time_interval), e.g. mode='max'"
            )

    @property
    def state_key(self) -> str:
        # A plain ModelCheckpoint's key: checkpoints written before (or without) the link resume its state.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        saved = self.source._last_checkpoint_saved
        same_state = self.source.save_weights_only == self.save_weights_only
        if not saved or not same_state or self.source._last_global_step_saved != trainer.global_step:
            super()._save_checkpoint(trainer, filepath)
            return
        # The same decision on every rank (no checkpoint is dumped, so no rank enters a collective that
        # a save would); rank 0 writes the link, as it would have written the file.
        if trainer.is_global_zero:
            link_over(saved, filepath)
        trainer.strategy.barrier("LinkedCheckpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
