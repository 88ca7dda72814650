"""torchvision's pretrained weights (a weights name for a ``torchvision:`` model) and head replacement.

:func:`create_torchvision_pretrained` loads the ImageNet model from torch.hub's checkpoint folder
(:func:`~patchswap.models.pretrained.torch_hub_checkpoint_dir`), then replaces every classifier layer
for ``num_classes`` and reports, in one line, what was loaded and what was replaced. Without a cached
copy and without network the error names the exact file looked for. :func:`torchvision_weights` reads a
weights name (``IMAGENET1K_V2``, ``DEFAULT``, the full ``ResNet50_Weights.IMAGENET1K_V2``);
:func:`torchvision_input` gives the weights' input size and mean/std. torchvision is imported only when
these are called.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .pretrained import (
    LOCAL_FILE_HINT,
    PretrainedNotCachedError,
    emit_report,
    report_line,
    torch_hub_checkpoint_dir,
)

__all__ = ["create_torchvision_pretrained", "torchvision_input", "torchvision_weights"]


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
            f"or a local weights file: {LOCAL_FILE_HINT}"
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
            f"or pass a local file: {LOCAL_FILE_HINT}"
        ) from err
    total = len(model.state_dict())
    categories = len(weights.meta.get("categories") or ()) or None
    skipped: dict[str, str] = {}
    if categories is not None and categories != num_classes:
        for path in _replace_heads(model, categories, num_classes):
            for p in ("weight", "bias"):
                if f"{path}.{p}" in model.state_dict():
                    skipped[f"{path}.{p}"] = f"classifier replaced {categories} -> {num_classes}"
    emit_report(report_line(f"torchvision {weights} ({file})", total, skipped), skipped)
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
            f"{type(model).__name__}; pass a local weights file instead: {LOCAL_FILE_HINT}"
        )
    return replaced


def torchvision_input(arch: str, weights_name: str) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """``(image_size, mean, std)`` of torchvision ``arch``'s weights: their ``transforms()`` (crop size)."""
    t = torchvision_weights(arch, weights_name).transforms()
    return int(t.crop_size[0]), tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
