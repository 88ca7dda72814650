"""Arrays on disk: ``npz:PATH[,PATH...]`` (or a bare ``*.npz`` path), loaded into memory.

Each file holds ``x`` (uint8 NHWC or NHW), ``y`` (integer labels) and optionally ``classes``; several
files are concatenated in the order given. This is how a dataset gets in when torchvision cannot
download it: convert it once to arrays and name the files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..arrays import TensorImageDataset
from ..registry import DatasetNotFoundError, DatasetRequest, register_dataset
from ..splits import labels_to_numpy
from .base import MemorySource

__all__ = ["load_npz_arrays", "npz_augment"]


def npz_augment(channels: int, height: int) -> tuple[int, bool]:
    """Crop padding and flip for arrays: grayscale is treated like MNIST (no flips: digits/letters)."""
    if channels == 1:
        return (2 if height >= 16 else 1), False
    if height <= 64:
        return 4, True
    return max(1, height // 8), True


def _read(path: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"npz file not found: {path}. Give existing files as 'npz:PATH[,PATH...]' (arrays x uint8 "
            "NHWC or NHW, y int64, optional classes)."
        )
    with np.load(path, allow_pickle=False) as arrays:
        missing = [k for k in ("x", "y") if k not in arrays.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing}; an npz dataset needs 'x' (images) and 'y'")
        x = arrays["x"]
        y = arrays["y"]
        names = [str(c) for c in arrays["classes"].tolist()] if "classes" in arrays.files else None
    if x.dtype != np.uint8:
        raise ValueError(f"{path}: x must be uint8 pixels 0..255, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{path}: x must be [N, H, W, C] or [N, H, W], got shape {x.shape}")
    if x.shape[-1] not in (1, 3, 4) and x.shape[1] in (1, 3, 4):
        raise ValueError(f"{path}: x looks channels-first {x.shape}; store it channels-last [N, H, W, C]")
    y = labels_to_numpy(y)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{path}: x has {x.shape[0]} images but y has {y.shape[0]} labels")
    return x, y, names


def load_npz_arrays(paths: Sequence[str]) -> TensorImageDataset:
    """The files at ``paths`` as one dataset; shapes and class names must agree across files."""
    images: list[torch.Tensor] = []
    labels: list[np.ndarray] = []
    classes: list[str] | None = None
    for raw in paths:
        path = os.path.abspath(os.path.expanduser(raw))
        x, y, names = _read(path)
        if names is not None:
            if classes is not None and names != classes:
                raise ValueError(f"{path}: its classes {names} differ from the other files' {classes}")
            classes = names
        if images and tuple(images[0].shape[1:]) != (x.shape[3], x.shape[1], x.shape[2]):
            raise ValueError(f"{path}: image shape {x.shape[1:]} differs from the other files")
        images.append(torch.from_numpy(x).permute(0, 3, 1, 2))
        labels.append(y)
    x_all = torch.cat(images).contiguous() if len(images) > 1 else images[0].contiguous()
    y_all = np.concatenate(labels)
    if classes is None:
        classes = [str(i) for i in range(int(y_all.max()) + 1 if y_all.size else 0)]
    return TensorImageDataset(x_all, torch.from_numpy(y_all), classes)


def _split_paths(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _claims(text: str) -> bool:
    """A bare comma-separated list of ``*.npz`` paths selects this family."""
    parts = _split_paths(text)
    return bool(parts) and all(p.lower().endswith(".npz") for p in parts)


@register_dataset(
    "npz", prefix="npz:", pattern="npz:PATH[,PATH...]", claims=_claims, summary="arrays x/y/classes"
)
def load_npz(request: DatasetRequest) -> MemorySource:
    """``request.argument``: comma-separated paths of ``.npz`` files."""
    paths = _split_paths(request.argument)
    if not paths:
        raise ValueError("'npz:' needs at least one path: npz:PATH[,PATH...]")
    train = load_npz_arrays(paths)
    pad, flip = npz_augment(int(train.images.shape[1]), int(train.images.shape[2]))
    source = MemorySource(
        display="npz:" + ",".join(paths), train=train, classes=train.classes, crop_padding=pad, flip=flip
    )
    return source.resized(request.image_size)
