"""Pretrained weights from the hubs: timm's Hugging Face cache (``true``) and torchvision weights names.

``model.pretrained`` is one of

* a local file (``.safetensors`` / ``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin``), loaded by
  :func:`~patchswap.models.registry.load_pretrained` into any model;
* ``true`` for a ``timm:`` model: ``timm.create_model(name, pretrained=True, num_classes=K)``, which
  goes through huggingface_hub's cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``; ``HF_HUB_OFFLINE=1`` never touches the network);
* a torchvision weights name for a ``torchvision:`` model (``IMAGENET1K_V2``, ``DEFAULT``, or the full
  ``ResNet50_Weights.IMAGENET1K_V2``; ``true`` means ``DEFAULT``): the ImageNet model is loaded from
  torch.hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), then its classifier is replaced.

Weights already in a cache load with no network. Every hub load reports, in one line, what was loaded
and what was skipped and why (a :class:`PretrainedReport` warning when something was skipped, an INFO
log otherwise). Without a cached copy and without network the error names the exact folder looked in
and the local-file alternative. :func:`pretrained_input` gives the input size and mean/std the
weights were trained with, for image folders.

This module reads the spec, names the cache folders, writes the report line and dispatches to each
hub's loader: :mod:`patchswap.models.hub_timm` (timm's hub weights) and
:mod:`patchswap.models.hub_torchvision` (torchvision weights and head replacement).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LOCAL_FILE_HINT",
    "TIMM_PREFIX",
    "TORCHVISION_PREFIX",
    "PretrainedNotCachedError",
    "PretrainedReport",
    "PretrainedSpec",
    "emit_report",
    "hf_hub_cache_dir",
    "hf_offline",
    "parse_pretrained",
    "pretrained_input",
    "report_line",
    "split_model_name",
    "torch_hub_checkpoint_dir",
]

logger = logging.getLogger("patchswap.models")

TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", "none", "null", ""}
LOCAL_FILE_HINT = "--model.pretrained PATH.safetensors"
# How many skipped keys a report lists before eliding the rest.
_MAX_KEYS_SHOWN = 8


class PretrainedNotCachedError(FileNotFoundError):
    """Hub weights are neither in the local cache nor downloadable (no network, or offline mode)."""


class PretrainedReport(UserWarning):
    """The one-line report of a pretrained load that skipped tensors (e.g. a resized classifier)."""


@dataclass(frozen=True)
class PretrainedSpec:
    """What ``model.pretrained`` asks for: ``source`` is ``file``, ``timm`` or ``torchvision``;
    ``value`` the path, the timm model name, or the torchvision weights member name."""

    source: str
    value: str


def split_model_name(name: str) -> tuple[str, str]:
    """``("timm" | "torchvision" | "zoo", name without the prefix)``."""
    low = name.strip().lower()
    if low.startswith(TIMM_PREFIX):
        return "timm", name.strip()[len(TIMM_PREFIX) :]
    if low.startswith(TORCHVISION_PREFIX):
        return "torchvision", name.strip()[len(TORCHVISION_PREFIX) :]
    return "zoo", name.strip()


def _looks_like_file(text: str) -> bool:
    return (
        os.path.exists(os.path.expanduser(text))
        or text.lower().endswith(WEIGHT_FILE_SUFFIXES)
        or "/" in text
        or os.sep in text
    )


def parse_pretrained(model_name: str, pretrained: str | Path | bool | None) -> PretrainedSpec | None:
    """Read ``model.pretrained`` for model ``model_name``; None when no weights are asked for."""
    if pretrained is None or pretrained is False:
        return None
    family, arch = split_model_name(model_name)
    if isinstance(pretrained, Path):
        return PretrainedSpec("file", str(pretrained))
    text = "true" if pretrained is True else str(pretrained).strip()
    if text.lower() in _FALSE:
        return None
    if text.lower() in _TRUE:
        if family == "timm":
            return PretrainedSpec("timm", arch)
        if family == "torchvision":
            return PretrainedSpec("torchvision", "DEFAULT")
        raise ValueError(
            f"model.pretrained=true downloads hub weights of timm:NAME or torchvision:NAME models; the zoo "
            f"model {model_name!r} has none: pass a local weights file: {LOCAL_FILE_HINT}"
        )
    if family == "torchvision" and not _looks_like_file(text) and re.fullmatch(r"[A-Za-z0-9_.]+", text):
        return PretrainedSpec("torchvision", text)
    return PretrainedSpec("file", text)


def hf_hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, read from the environment now (HF_HUB_CACHE, HF_HOME, XDG)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(os.path.expanduser(explicit)))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface"
    )
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def torch_hub_checkpoint_dir() -> Path:
    """Where torch.hub (and so torchvision) keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE``)."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


# --------------------------------------------------------------------------- the one-line report


def _shorten(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    return shown + (f", ... (+{len(keys) - _MAX_KEYS_SHOWN} more)" if len(keys) > _MAX_KEYS_SHOWN else "")


def report_line(source: str, total: int, skipped: Mapping[str, str]) -> str:
    """``loaded L/T tensors from SOURCE; skipped a, b (why); c (why)``, skipped keys grouped by reason."""
    line = f"loaded {total - len(skipped)}/{total} tensors from {source}"
    by_reason: dict[str, list[str]] = {}
    for key, reason in skipped.items():
        by_reason.setdefault(reason, []).append(key)
    if by_reason:
        line += "; skipped " + "; ".join(f"{_shorten(keys)} ({why})" for why, keys in by_reason.items())
    return line


def emit_report(line: str, skipped: Mapping[str, str]) -> None:
    """Log a load's report line; also warn it (:class:`PretrainedReport`) when something was skipped.

    ``stacklevel`` points past ``create_model``'s hub helper: call it from ``create_*_pretrained``."""
    logger.info(line)
    if skipped:
        warnings.warn(line, PretrainedReport, stacklevel=4)


# --------------------------------------------------------------------------- input size, mean, std


def pretrained_input(
    model_name: str, pretrained: str | Path | bool | None
) -> tuple[int, tuple[float, ...], tuple[float, ...]] | None:
    """``(image_size, mean, std)`` the hub weights were trained with, or None (no hub weights asked for).

    timm: ``timm.data.resolve_data_config`` of the model's ``pretrained_cfg``; torchvision: the weights'
    ``transforms()`` (crop size, mean, std). Needs no network. Image folders use it unless the config
    sets ``data.image_size``.
    """
    spec = parse_pretrained(model_name, pretrained)
    if spec is None or spec.source == "file":
        return None
    if spec.source == "timm":
        from .hub_timm import timm_input

        return timm_input(spec.value)
    from .hub_torchvision import torchvision_input

    _, arch = split_model_name(model_name)
    return torchvision_input(arch, spec.value)


# --------------------------------------------------------------------------- the hub loaders, by name

# Each hub's loader lives in a module of its own (``hub_timm``, ``hub_torchvision``), which imports this
# one; their public names stay importable from here (``from patchswap.models.pretrained import
# create_timm_pretrained``), looked up on first use so that neither module is imported in a cycle.
_HUB_NAMES = {
    "create_timm_pretrained": "hub_timm",
    "timm_input": "hub_timm",
    "create_torchvision_pretrained": "hub_torchvision",
    "torchvision_input": "hub_torchvision",
    "torchvision_weights": "hub_torchvision",
}


def __getattr__(name: str) -> Any:
    module = _HUB_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)
