"""timm's pretrained weights (``model.pretrained: true`` for a ``timm:`` model), through the hub cache.

:func:`create_timm_pretrained` calls ``timm.create_model(name, pretrained=True, num_classes=K)`` with
huggingface_hub's cache folder (:func:`~patchswap.models.pretrained.hf_hub_cache_dir`), then re-reads
the cached weights file's tensor names and shapes to report, in one line, what was loaded and what was
skipped (the resized classifier). Without a cached copy and without network the error names the exact
folder looked in. :func:`timm_input` gives the weights' input size and mean/std. timm is imported only
when these are called.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .pretrained import (
    LOCAL_FILE_HINT,
    PretrainedNotCachedError,
    emit_report,
    hf_hub_cache_dir,
    hf_offline,
    report_line,
    torch_hub_checkpoint_dir,
)

__all__ = ["create_timm_pretrained", "timm_input"]


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
            f"timm.list_pretrained('{arch.split('.')[0]}*'), or pass a local weights file: {LOCAL_FILE_HINT}"
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
        emit_report(line, dict.fromkeys(skipped, ""))
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
    emit_report(report_line(f"{where} ({file})", len(shapes), skipped), skipped)
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
    offline = hf_offline()
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
        f"machine with network and copy that folder here, or pass a local file: {LOCAL_FILE_HINT}"
    )


def timm_input(arch: str) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """``(image_size, mean, std)`` of timm ``arch``'s weights: ``resolve_data_config`` of their config."""
    from timm.data import resolve_data_config

    data = resolve_data_config(pretrained_cfg=_timm_cfg(arch))
    size = int(data["input_size"][-1])
    return size, tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"])
