"""The run directory and checkpoint format, in one place that every layer may import.

``patchswap train`` (and ``patchswap transfer``) leave a run directory::

    RUN/config.yaml  RUN/summary.json
    RUN/checkpoints/{best,last}.ckpt  RUN/checkpoints/{best,last}.safetensors

A ``.ckpt`` is a Lightning checkpoint: the network's weights under ``state_dict`` as ``model.<key>``
(``model._orig_mod.<key>`` when it was torch.compile'd) and the resolved run config under
:data:`CONFIG_KEY`. Whoever reads or writes that format -- the engine, ``kd``'s teacher, dense
backbones, ``load_pretrained`` -- goes through this module, so the format is written down once. It
imports torch only (yaml and safetensors when a function needs them) and nothing of Lightning or the
engine, so ``methods/``, ``models/`` and ``dense/`` can use it without pointing back up.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BACKBONE_KEY",
    "BEST_THEN_LAST",
    "CHECKPOINT_DIR",
    "COMPILED_PREFIX",
    "CONFIG_KEY",
    "MODEL_PREFIX",
    "RUN_CHECKPOINTS",
    "TRANSFER_CONFIG_KEY",
    "CheckpointError",
    "CheckpointNotFoundError",
    "atomic_write",
    "clean_key",
    "find_checkpoint",
    "link_over",
    "load_checkpoint",
    "locate_checkpoint",
    "network_state",
    "resolve_run_path",
    "run_config_beside",
    "run_dir_of",
    "read_weights_metadata",
    "run_relative",
    "save_weights",
    "weights_metadata",
]

CONFIG_KEY = "patchswap_config"
"""Key of the resolved run config (``RunConfig.to_dict()``) in a ``patchswap train`` checkpoint."""
TRANSFER_CONFIG_KEY = "patchswap_transfer_config"
"""Key of the resolved transfer config in a ``patchswap transfer`` checkpoint."""
BACKBONE_KEY = "patchswap_backbone_model"
"""Key of the backbone's model name in a transfer checkpoint (rebuild it without the backbone run)."""

CHECKPOINT_DIR = "checkpoints"
"""The sub-folder of a run directory that holds its checkpoints."""
BEST_THEN_LAST = ("best.ckpt", "last.ckpt")
"""Lightning checkpoints tried in a run directory, best first."""
RUN_CHECKPOINTS = ("best.ckpt", "best.safetensors", "last.ckpt", "last.safetensors")
"""Any weights file of a run, best first. A .ckpt comes before the .safetensors of the same name: the
safetensors copy is only written when training ends, so after a kill it can be stale."""

MODEL_PREFIX = "model."
"""The LightningModule holds the network as ``self.model``, so its keys start with this."""
COMPILED_PREFIX = "_orig_mod."
"""torch.compile nests the original network under this attribute."""


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a patchswap checkpoint."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """Neither a checkpoint file nor a run directory holding one (also a FileNotFoundError)."""


# --------------------------------------------------------------------------- writing


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path`` and rename it over ``path`` when complete.

    A reader (or a run killed mid-save) therefore sees either the previous complete file or the new
    complete file, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def link_over(source: str | Path, target: str | Path) -> None:
    """Make ``target`` the same file as ``source``, atomically: a hard link (no second write of the
    bytes), a copy where the file system has no links. ``source`` stays as it is; a later
    :func:`atomic_write` of either name replaces that name alone (a new file, not the shared one)."""
    source, target = Path(source), Path(target)
    tmp = target.with_name(f".{target.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # no hard links here: a copy, written as atomically and durably as any save
        import shutil

        with source.open("rb") as f:
            atomic_write(target, lambda out: shutil.copyfileobj(f, out))
        return
    os.replace(tmp, target)
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename or link in ``folder`` durable (where the file system allows a folder fsync)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def weights_metadata(**fields: Any) -> dict[str, str]:
    """safetensors metadata (text only): strings as they are, anything else as JSON, so a weights file
    alone says what it holds (architecture, classes, input size, normalisation, method).
    ``format: pt`` marks PyTorch tensors for other safetensors readers."""
    out = {"format": "pt"}
    for key, value in fields.items():
        if value is not None:
            out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def read_weights_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a safetensors file, JSON values decoded (see :func:`weights_metadata`)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out: dict[str, Any] = {}
    for key, text in raw.items():
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """The model's weights alone as safetensors (portable, no pickle), written atomically, with
    ``metadata`` (text; see :func:`weights_metadata`) in the file's header."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    blob = save(state, metadata=metadata)
    atomic_write(path, lambda f: f.write(blob))


# --------------------------------------------------------------------------- reading


def load_checkpoint(
    path: str | Path, map_location: Any = "cpu", *, weights_only: bool = False
) -> dict[str, Any]:
    """Load a checkpoint, turning a truncated or corrupt file into a :class:`CheckpointError` that says so.

    ``weights_only`` refuses pickled code; our own checkpoints hold plain containers, tensors and
    numbers, so it is safe for files of unknown origin (a kd teacher) and off for the engine's own.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix.lower() == ".safetensors":  # weights alone: no config, optimiser or epoch with them
        raise CheckpointError(
            f"{path} holds the weights alone; pass the run directory or a .ckpt checkpoint of it "
            "(checkpoints/best.ckpt, last.ckpt: a checkpoint carries the config that rebuilds the model "
            "and data, and the state a resume continues from)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means the file is unusable
        if weights_only and "weights only" in str(e).lower():
            found = re.search(r"Unsupported global: [^\n]*", str(e))
            raise CheckpointError(
                f"checkpoint {path} holds objects other than tensors and plain containers, which are not "
                f"unpickled from a file of unknown origin ({found.group(0) if found else type(e).__name__})"
            ) from e
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {str(e)[:200]}); delete it and "
            "resume from another checkpoint in the same folder, or start the run again"
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a patchswap/Lightning checkpoint (no 'state_dict' in it)")
    return ckpt


def clean_key(key: str) -> str:
    """A network key without torch.compile's ``_orig_mod.`` (wherever a compiled module was nested)."""
    return key.replace(COMPILED_PREFIX, "")


def network_state(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The network's own weights from a Lightning ``state_dict``: the ``model.`` entries, keys cleaned.

    Everything else the LightningModule saved (a method's buffers, metrics) is left out, so the result
    loads into a freshly built network of the run's architecture. Empty when nothing starts with
    ``model.``.
    """
    return {clean_key(k[len(MODEL_PREFIX) :]): v for k, v in state_dict.items() if k.startswith(MODEL_PREFIX)}


# --------------------------------------------------------------------------- run directories


def find_checkpoint(run_dir: str | Path, names: tuple[str, ...] = BEST_THEN_LAST) -> Path | None:
    """The first of ``names`` present in ``run_dir/checkpoints``, or None."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    return next((folder / n for n in names if (folder / n).is_file()), None)


def locate_checkpoint(target: str | Path, names: tuple[str, ...] = BEST_THEN_LAST) -> Path:
    """The checkpoint a user means by ``target``: a run directory's best (else last) one, or a file.

    Raises :class:`CheckpointNotFoundError` naming what was looked for.
    """
    p = Path(target).expanduser()
    if p.is_dir():
        found = find_checkpoint(p, names)
        if found is None:
            raise CheckpointNotFoundError(
                f"{p} is not a patchswap run directory: it holds no "
                f"{' or '.join(f'{CHECKPOINT_DIR}/{n}' for n in names)}"
            )
        return found
    if not p.is_file():
        raise CheckpointNotFoundError(
            f"{p} is neither a run directory nor a checkpoint file (it does not exist)"
        )
    return p


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run directory of a checkpoint in ``RUN/checkpoints/``; None for a file elsewhere."""
    p = Path(checkpoint)
    return p.parent.parent if p.parent.name == CHECKPOINT_DIR else None


def run_config_beside(path: str | Path) -> dict[str, Any] | None:
    """The run's config.yaml for a file in ``RUN/checkpoints/`` (or directly in ``RUN/``).

    Bare safetensors weights carry no config; this is how they find their architecture.
    """
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


def run_relative(path: str | Path, run_dir: str | Path) -> str:
    """``path`` relative to ``run_dir`` (``checkpoints/best.ckpt``), for files such as summary.json.

    A committed or copied run then names its own files, not a folder of the machine that ran it.
    A path outside the run directory is kept as it is.
    """
    try:
        return Path(path).resolve().relative_to(Path(run_dir).resolve()).as_posix()
    except ValueError:
        return str(path)


def resolve_run_path(run_dir: str | Path, value: str | Path) -> Path:
    """The file a run's record names: relative to ``run_dir`` (new), or absolute (older summaries).

    An absolute path that no longer exists (the run was moved or committed from another machine)
    is looked up under ``run_dir`` by its part below the run (``checkpoints/best.ckpt``).
    """
    p, run_dir = Path(value), Path(run_dir)
    if not p.is_absolute():
        return run_dir / p
    if not p.exists() and p.parent.name == CHECKPOINT_DIR:
        moved = run_dir / CHECKPOINT_DIR / p.name
        if moved.exists():
            return moved
    return p
