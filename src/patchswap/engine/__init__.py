"""The Lightning engine's public entry points, for the CLI, studies and your own scripts.

Imported lazily, so that reading a config (``patchswap train --help``) does not load Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module of the engine that defines it
_EXPORTS = {
    "RunError": "patchswap.engine.harness",
    "load_config": "patchswap.engine.config",
    "train": "patchswap.engine.training",
    "resume": "patchswap.engine.training",
    "evaluate": "patchswap.engine.evaluating",
    "load_transfer_config": "patchswap.engine.dense_training",
    "train_transfer": "patchswap.engine.dense_training",
    "resume_transfer": "patchswap.engine.dense_training",
    "evaluate_transfer": "patchswap.engine.dense_training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'patchswap.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
