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
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "TIMM_PREFIX",
    "TORCHVISION_PREFIX",
    "PretrainedNotCachedError",
    "PretrainedReport",
    "PretrainedSpec",
    "hf_hub_cache_dir",
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
_LOCAL_FILE_HINT = "--model.pretrained PATH.safetensors"
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
            f"model {model_name!r} has none: pass a local weights file: {_LOCAL_FILE_HINT}"
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


def _hf_offline() -> bool:
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


def _emit(line: str, skipped: Mapping[str, str]) -> None:
    logger.info(line)
    if skipped:
        warnings.warn(line, PretrainedReport, stacklevel=4)


# --------------------------------------------------------------------------- timm: the HF hub cache


def _timm_cfg(arch: str) -> dict[str, Any]:
    import timm.models

    try:
        cfg = timm.models.get_pretrained_cfg(arch, allow_unregistered=False)
    except RuntimeError as err:
        raise ValueError(f"timm: {err}") from err
    return cfg.to_dict() if cfg is not None else {}


def _hf_repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _checkpoint_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a weights file, without loading the tensors of a .safetensors file."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def _timm_cached_file(cfg: dict[str, Any], cache: Path) -> str | None:
    """The cached weights file timm read for ``cfg`` (None if it cannot be located)."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = str(hub_id).partition("@")
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else []
        for name in [*names, "model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(repo, name, cache_dir=str(cache), revision=revision or None)
            if isinstance(found, str):
                return found
        return None
    url = cfg.get("url")
    if url:
        file = torch_hub_checkpoint_dir() / os.path.basename(str(url).split("?")[0])
        return str(file) if file.is_file() else None
    return None


def create_timm_pretrained(arch: str, num_classes: int, in_chans: int, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model(arch, pretrained=True, num_classes=...)`` through the hub cache, reported."""
    import timm

    cfg = _timm_cfg(arch)
    if not cfg.get("hf_hub_id") and not cfg.get("url") and not cfg.get("file"):
        raise ValueError(
            f"timm has no pretrained weights for {arch!r}; list the ones it has with "
            f"timm.list_pretrained('{arch.split('.')[0]}*'), or pass a local weights file: {_LOCAL_FILE_HINT}"
        )
    cache = hf_hub_cache_dir()
    extra = {"cache_dir": str(cache)} if cfg.get("hf_hub_id") else {}
    try:
        model = timm.create_model(
            arch, pretrained=True, num_classes=num_classes, in_chans=in_chans, **extra, **kwargs
        )
    except Exception as err:
        if not _is_not_cached_error(err):
            raise
        raise _timm_not_cached(arch, cfg, cache, err) from err
    source_cfg = getattr(model, "pretrained_cfg", None) or cfg
    file = _timm_cached_file(source_cfg, cache)
    where = f"timm hub {source_cfg.get('hf_hub_id') or source_cfg.get('url')}"
    if file is None:  # cannot re-read what timm loaded: report what timm is documented to drop
        skipped = _timm_classifier_skips(source_cfg, num_classes, list(model.state_dict()))
        line = f"{where}: loaded (tensor count unknown); " + (
            "skipped " + ", ".join(skipped) + f" (classifier resized {source_cfg.get('num_classes')} -> "
            f"{num_classes})"
            if skipped
            else "nothing skipped"
        )
        _emit(line, dict.fromkeys(skipped, ""))
        return model
    shapes = _checkpoint_shapes(file)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    classifier = set(_timm_classifier_keys(source_cfg))
    first_convs = source_cfg.get("first_conv") or ()
    first_convs = {f"{c}.weight" for c in ((first_convs,) if isinstance(first_convs, str) else first_convs)}
    skipped: dict[str, str] = {}
    for key, shape in shapes.items():
        if own.get(key) == shape or (key in first_convs and key in own and in_chans != 3):
            continue  # loaded as is, or the stem adapted to in_chans by timm
        if key in classifier and num_classes != source_cfg.get("num_classes"):
            skipped[key] = f"classifier resized {source_cfg.get('num_classes')} -> {num_classes}"
        elif key not in own:
            skipped[key] = "not in this model"
        else:
            skipped[key] = f"shape {shape} vs model {own[key]}"
    _emit(report_line(f"{where} ({file})", len(shapes), skipped), skipped)
    return model


def _timm_classifier_keys(cfg: dict[str, Any]) -> list[str]:
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return [f"{n}.{p}" for n in names for p in ("weight", "bias")]


def _timm_classifier_skips(cfg: dict[str, Any], num_classes: int, own: list[str]) -> list[str]:
    if num_classes == cfg.get("num_classes"):
        return []
    return [k for k in _timm_classifier_keys(cfg) if k in own]


def _is_not_cached_error(err: BaseException) -> bool:
    from urllib.error import URLError

    try:
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover
        LocalEntryNotFoundError = ()  # type: ignore[assignment,misc]  # noqa: N806
    return isinstance(err, (LocalEntryNotFoundError, URLError, ConnectionError)) or (
        type(err).__name__ in ("OfflineModeIsEnabled", "ConnectError", "ConnectTimeout")
    )


def _timm_not_cached(
    arch: str, cfg: dict[str, Any], cache: Path, err: BaseException
) -> PretrainedNotCachedError:
    offline = _hf_offline()
    why = "HF_HUB_OFFLINE is set" if offline else f"the hub could not be reached ({type(err).__name__})"
    if cfg.get("hf_hub_id"):
        repo = str(cfg["hf_hub_id"]).partition("@")[0]
        folder = _hf_repo_dir(cache, repo)
        where = (
            f"looked in the Hugging Face cache {folder} (snapshots/<revision>/model.safetensors; the cache "
            "folder comes from HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)"
        )
        what = f"timm weights {repo}"
    else:
        url = str(cfg.get("url"))
        folder = torch_hub_checkpoint_dir() / os.path.basename(url)
        where = f"looked for {folder} (torch.hub's cache: $TORCH_HOME/hub/checkpoints)"
        what = f"timm weights {url}"
    return PretrainedNotCachedError(
        f"timm:{arch}: no cached copy of the {what} and no download ({why}); {where}. Download them on a "
        f"machine with network and copy that folder here, or pass a local file: {_LOCAL_FILE_HINT}"
    )


# --------------------------------------------------------------------------- torchvision weights


def torchvision_weights(arch: str, name: str) -> Any:
    """The weights member ``name`` (``IMAGENET1K_V2``, ``DEFAULT``, full name) of torchvision ``arch``."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch.lower())
    except (ValueError, KeyError) as err:
        raise ValueError(f"torchvision:{arch} has no weights names: {err}") from err
    member = name
    if "." in name:
        prefix, _, member = name.rpartition(".")
        if prefix != enum.__name__:
            raise ValueError(f"torchvision:{arch} takes {enum.__name__}.*, not {name!r}")
    valid = list(enum.__members__)
    try:
        return enum[member]
    except KeyError:
        raise ValueError(
            f"torchvision:{arch} has no weights {name!r}; valid: {', '.join(valid)} (or true = DEFAULT), "
            f"or a local weights file: {_LOCAL_FILE_HINT}"
        ) from None


def create_torchvision_pretrained(
    arch: str, weights_name: str, num_classes: int, kwargs: dict[str, Any]
) -> nn.Module:
    """The ImageNet model from torch.hub's cache, then its classifier replaced for ``num_classes``."""
    import torchvision

    weights = torchvision_weights(arch, weights_name)
    file = torch_hub_checkpoint_dir() / os.path.basename(str(weights.url).split("?")[0])
    try:
        model = torchvision.models.get_model(arch.lower(), weights=weights, **kwargs)
    except OSError as err:  # URLError and friends: not cached and not downloadable
        if file.is_file():
            raise
        raise PretrainedNotCachedError(
            f"torchvision:{arch}: no cached copy of {weights} at {file} and no download from {weights.url} "
            f"({err}); the folder is torch.hub's cache ($TORCH_HOME/hub/checkpoints). Put the file there, "
            f"or pass a local file: {_LOCAL_FILE_HINT}"
        ) from err
    total = len(model.state_dict())
    categories = len(weights.meta.get("categories") or ()) or None
    skipped: dict[str, str] = {}
    if categories is not None and categories != num_classes:
        for path in _replace_heads(model, categories, num_classes):
            for p in ("weight", "bias"):
                if f"{path}.{p}" in model.state_dict():
                    skipped[f"{path}.{p}"] = f"classifier replaced {categories} -> {num_classes}"
    _emit(report_line(f"torchvision {weights} ({file})", total, skipped), skipped)
    return model


def _replace_heads(model: nn.Module, categories: int, num_classes: int) -> list[str]:
    """Swap every classifier layer (Linear, or 1x1 Conv2d, with ``categories`` outputs) for a fresh one."""
    replaced = []
    for path, module in list(model.named_modules()):
        new: nn.Module | None = None
        if isinstance(module, nn.Linear) and module.out_features == categories:
            new = nn.Linear(module.in_features, num_classes, bias=module.bias is not None)
        elif (
            isinstance(module, nn.Conv2d)
            and module.out_channels == categories
            and module.kernel_size == (1, 1)
            and module.groups == 1
        ):
            new = nn.Conv2d(module.in_channels, num_classes, 1, bias=module.bias is not None)
        if new is None:
            continue
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, attr, new)
        replaced.append(path)
    if not replaced:
        raise ValueError(
            f"found no classifier layer with {categories} outputs to resize to {num_classes} classes in "
            f"{type(model).__name__}; pass a local weights file instead: {_LOCAL_FILE_HINT}"
        )
    return replaced


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
        from timm.data import resolve_data_config

        data = resolve_data_config(pretrained_cfg=_timm_cfg(spec.value))
        size = int(data["input_size"][-1])
        return size, tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"])
    _, arch = split_model_name(model_name)
    t = torchvision_weights(arch, spec.value).transforms()
    return int(t.crop_size[0]), tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
