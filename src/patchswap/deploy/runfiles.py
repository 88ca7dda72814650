"""Reading a run directory without the engine: a stand-in for :mod:`patchswap.runs` until it lands.

The names and signatures follow ``patchswap.runs`` (``CONFIG_KEY``, :func:`load_checkpoint`,
:func:`locate_checkpoint`, :func:`network_state`, :func:`run_dir_of`, :func:`run_config_beside`), so
switching is a change of import. Lightning-free: ``deploy/`` sits below the engine and must not import
it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BEST_THEN_LAST",
    "CHECKPOINT_DIR",
    "CONFIG_KEY",
    "CheckpointError",
    "load_checkpoint",
    "locate_checkpoint",
    "network_state",
    "run_config_beside",
    "run_dir_of",
]

CONFIG_KEY = "patchswap_config"
CHECKPOINT_DIR = "checkpoints"
BEST_THEN_LAST = ("best.ckpt", "last.ckpt")
MODEL_PREFIX = "model."
COMPILED_PREFIX = "_orig_mod."


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a patchswap checkpoint."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A Lightning checkpoint as a dict; a truncated or foreign file is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means the file is unusable
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {str(e)[:200]})"
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a patchswap/Lightning checkpoint (no 'state_dict' in it)")
    return ckpt


def network_state(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The network's own weights from a Lightning ``state_dict`` (``model.`` keys, compile prefix gone)."""
    return {
        k[len(MODEL_PREFIX) :].replace(COMPILED_PREFIX, ""): v
        for k, v in state_dict.items()
        if k.startswith(MODEL_PREFIX)
    }


def locate_checkpoint(target: str | Path, names: tuple[str, ...] = BEST_THEN_LAST) -> Path:
    """A run directory's best (else last) checkpoint, or ``target`` itself when it is a file."""
    p = Path(target).expanduser()
    if p.is_dir():
        folder = p / CHECKPOINT_DIR
        found = next((folder / n for n in names if (folder / n).is_file()), None)
        if found is None:
            wanted = " or ".join(f"{CHECKPOINT_DIR}/{n}" for n in names)
            raise CheckpointError(f"{p} is not a patchswap run directory: it holds no {wanted}")
        return found
    if not p.is_file():
        raise CheckpointError(f"{p} is neither a run directory nor a checkpoint file (it does not exist)")
    return p


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run directory of a checkpoint in ``RUN/checkpoints/``; None for a file elsewhere."""
    p = Path(checkpoint)
    return p.parent.parent if p.parent.name == CHECKPOINT_DIR else None


def run_config_beside(path: str | Path) -> dict[str, Any] | None:
    """The run's config.yaml for a file in ``RUN/checkpoints/`` (or directly in ``RUN/``)."""
    import yaml

    path = Path(path)
    run_dir = run_dir_of(path)
    for folder in (run_dir, path.parent) if run_dir is not None else (path.parent,):
        file = folder / "config.yaml"
        if file.is_file():
            data = yaml.safe_load(file.read_text())
            if isinstance(data, dict):
                return data
    return None
