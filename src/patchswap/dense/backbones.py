"""Loading the classification backbone of a dense model: a run directory, a checkpoint or a model name.

A run's class count and input channels are read from its weights (the config names the dataset, not its
shape), so no dataset has to be loaded. The run format itself (locating checkpoints, network weights,
the config beside a checkpoint) lives in :mod:`patchswap.runs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from patchswap.models import create_model
from patchswap.models.registry import TIMM_PREFIX, TORCHVISION_PREFIX, available_models
from patchswap.runs import (
    CONFIG_KEY,
    RUN_CHECKPOINTS,
    CheckpointError,
    load_checkpoint,
    locate_checkpoint,
    network_state,
    run_config_beside,
)

__all__ = ["LoadedBackbone", "load_backbone"]

# Head size of a randomly initialised backbone: the classifier is discarded by the dense models.
_PLACEHOLDER_CLASSES = 10


class LoadedBackbone(NamedTuple):
    """A classifier to cut into stages, where its weights came from, and the model name that rebuilds
    its architecture (so a finished transfer run can be reloaded without the backbone's run)."""

    model: nn.Module
    origin: str
    name: str


class DenseModel(NamedTuple):
    """A segmentation or detection model, a description of its backbone's weights, and the backbone's
    model name."""

    model: nn.Module
    origin: str
    backbone_name: str


def load_backbone(spec: str | Path, *, in_chans: int) -> LoadedBackbone:
    """The classifier named by ``spec`` and where its weights came from.

    ``spec`` is, in this order: an existing run directory (``checkpoints/`` best.ckpt, best.safetensors,
    last.ckpt, last.safetensors, the first present), a checkpoint file (a ``.ckpt`` written by
    ``patchswap train``, which stores its config, or a ``.safetensors`` inside a run's ``checkpoints/``
    next to ``config.yaml``), or a model name (zoo, ``timm:NAME``, ``torchvision:NAME``) for a randomly
    initialised backbone. The run's class count and input channels are read from the weights themselves
    (the config names the dataset, not its shape), so no dataset has to be loaded; an ``in_chans`` that
    differs from the run's is an error, because the stem would not fit the new images.
    """
    text = str(spec).strip()
    path = Path(text).expanduser()
    if text and path.exists():
        return _load_from_path(path, in_chans)
    if _is_model_name(text):
        model = create_model(text, _PLACEHOLDER_CLASSES, in_chans=in_chans)
        return LoadedBackbone(model, f"{text} (random initialisation, in_chans={in_chans})", text)
    zoo = [m for m in available_models() if ":" not in m]
    raise FileNotFoundError(
        f"backbone {text!r} is neither an existing run directory or checkpoint file nor a model name "
        f"(zoo: {', '.join(zoo)}; or {TIMM_PREFIX}NAME / {TORCHVISION_PREFIX}NAME)"
    )


def _is_model_name(text: str) -> bool:
    lower = text.lower()
    if lower.startswith((TIMM_PREFIX, TORCHVISION_PREFIX)):
        return len(text.split(":", 1)[1]) > 0
    return lower in {m for m in available_models() if ":" not in m}


def _load_from_path(path: Path, in_chans: int) -> LoadedBackbone:
    path = locate_checkpoint(path, RUN_CHECKPOINTS)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
        config = run_config_beside(path)
        if config is None:
            raise CheckpointError(
                f"{path} holds bare weights and no config.yaml was found beside it (in its run directory); "
                "pass the run directory, its .ckpt, or a model name"
            )
    elif suffix in (".ckpt", ".pt", ".pth"):
        ckpt = load_checkpoint(path)
        config = ckpt.get(CONFIG_KEY)
        if not isinstance(config, dict):
            config = run_config_beside(path)
        if config is None:
            raise CheckpointError(
                f"{path} carries no patchswap config and no config.yaml was found beside it; was it written "
                "by patchswap train? Pass its run directory or a model name instead"
            )
        state = network_state(ckpt["state_dict"])
    else:
        raise ValueError(f"{path}: unknown checkpoint type {suffix!r}; expected .ckpt or .safetensors")

    model_cfg = config.get("model") or {}
    data_cfg = config.get("data") or {}
    name = model_cfg.get("name")
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"the config of {path} names no model (model.name)")
    data_name = data_cfg.get("name", "?")

    num_classes = _infer_size(name, "num_classes", state) or _PLACEHOLDER_CLASSES
    run_chans = _infer_size(name, "in_chans", state)
    if run_chans is not None and run_chans != in_chans:
        raise ValueError(
            f"{path} was trained on {run_chans}-channel images (data.name={data_name!r}) but the dense data "
            f"has in_chans={in_chans}; use a backbone trained on {in_chans}-channel images, or a model name "
            "for a fresh one"
        )
    model = create_model(name, num_classes, in_chans=in_chans)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit model {name!r}: {str(err)[:500]}") from err
    return LoadedBackbone(
        model, f"{name} trained on {data_name} ({num_classes} classes), weights from {path}", name
    )


def _infer_size(name: str, arg: str, state: dict[str, Tensor]) -> int | None:
    """The value of ``arg`` (num_classes / in_chans) a state dict was built with.

    Two models differing only in ``arg`` are built on the meta device (no memory, no init cost); the
    first tensor whose shape differs between them tells where ``arg`` shows up, and the checkpoint's
    size there is the answer. None when nothing depends on it or the key is absent.
    """
    a, b = ({"num_classes": 2, "in_chans": 3}, {"num_classes": 3, "in_chans": 3})
    if arg == "in_chans":
        a, b = ({"num_classes": 2, "in_chans": 1}, {"num_classes": 2, "in_chans": 2})
    try:
        with torch.device("meta"):
            sa = create_model(name, a["num_classes"], in_chans=a["in_chans"]).state_dict()
            sb = create_model(name, b["num_classes"], in_chans=b["in_chans"]).state_dict()
    except Exception:  # noqa: BLE001 - a builder that cannot run on meta: fall back to real tensors
        sa = create_model(name, a["num_classes"], in_chans=a["in_chans"]).state_dict()
        sb = create_model(name, b["num_classes"], in_chans=b["in_chans"]).state_dict()
    for key, ta in sa.items():
        tb = sb.get(key)
        if tb is None or ta.shape == tb.shape or key not in state or state[key].ndim != ta.ndim:
            continue
        dim = next(i for i, (x, y) in enumerate(zip(ta.shape, tb.shape, strict=True)) if x != y)
        return int(state[key].shape[dim])
    return None
