"""Lightning checkpoint I/O that survives a kill: saves go through :func:`patchswap.runs.atomic_write`.

The checkpoint format itself (loading with a clear corrupt-file error, locating, weights) lives in
:mod:`patchswap.runs`; this module only plugs it into Lightning's ``Trainer(plugins=[...])``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from patchswap.engine.errors import CheckpointWriteError
from patchswap.runs import atomic_write, load_checkpoint

__all__ = ["AtomicCheckpointIO"]


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
