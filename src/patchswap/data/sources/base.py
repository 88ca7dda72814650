"""What a dataset loader returns when its images fit in memory: :class:`MemorySource`.

Loaders of the in-memory families (torchvision, arrays, embedded) return one; :func:`build_data`
carves its training pool with :func:`~patchswap.data.carve.carve_splits` and asks it for the bundle.
Image folders return a :class:`~patchswap.data.sources.folders.FolderSource` with the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..arrays import TensorImageDataset
from ..bundle import DataBundle
from ..carve import SplitIndices
from ..transforms import DeviceAugment

__all__ = ["MemorySource", "channel_stats", "resize_uint8", "tensor_dataset"]


def tensor_dataset(images: Any, targets: Any, classes: Sequence[str]) -> TensorImageDataset:
    """uint8 ``[N, C, H, W]`` images and labels from any array type as a :class:`TensorImageDataset`."""
    images = torch.as_tensor(images)
    return TensorImageDataset(
        images.contiguous(), torch.as_tensor(np.asarray(targets), dtype=torch.int64), classes
    )


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 [N, C, H, W] once at load time (antialiased bilinear), chunked to bound memory."""
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].float()
        block = F.interpolate(block, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = block.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std (0..1 scale) of uint8 images from a 256-bin histogram per channel.

    A histogram is exact for uint8 and much faster than converting the whole set to float64.
    """
    c = images.shape[1]
    if images.numel() == 0:
        return (0.5,) * c, (0.5,) * c
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for ch in range(c):
        hist = torch.bincount(images[:, ch].reshape(-1), minlength=256).to(torch.float64)
        total = hist.sum()
        mean = (hist * values).sum() / total
        std = ((hist * (values - mean).square()).sum() / total).sqrt()
        means.append(float(mean))
        stds.append(float(std) if float(std) > 1e-6 else 1.0)
    return tuple(means), tuple(stds)


@dataclass
class MemorySource:
    """A loaded in-memory dataset before splitting.

    ``train`` is the pool the splits are carved from; ``test`` the dataset's own test set, if any.
    ``mean``/``std`` None: computed from the final training split. ``default_test_split`` is carved
    when the dataset has no test set and the caller gives no ``test_split``.
    """

    display: str
    train: TensorImageDataset
    classes: list[str]
    crop_padding: int
    flip: bool
    test: TensorImageDataset | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    default_test_split: float | int | None = None
    val: None = None  # in-memory datasets never ship a validation set: it is always carved

    def labels(self) -> np.ndarray:
        return self.train.targets.numpy()

    def resized(self, image_size: int | None) -> MemorySource:
        """Resize every image once to ``image_size`` squared (None or the native size: unchanged)."""
        native_h = int(self.train.images.shape[2])
        if image_size is None or (int(image_size) == native_h and self.train.images.shape[3] == native_h):
            return self
        size = int(image_size)
        if size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")

        def resize(ds: TensorImageDataset) -> TensorImageDataset:
            return TensorImageDataset(resize_uint8(ds.images, size), ds.targets, self.classes)

        self.train = resize(self.train)
        if self.test is not None:
            self.test = resize(self.test)
        self.crop_padding = max(1, round(self.crop_padding * size / native_h)) if self.crop_padding else 0
        return self

    def bundle(self, splits: SplitIndices) -> DataBundle:
        """The bundle for carved ``splits``; statistics from the final training split when not fixed."""
        test = self.test
        if test is None and splits.test is not None:
            test = self.train.subset(splits.test)
        val = None if splits.val is None else self.train.subset(splits.val)
        train = self.train if len(splits.train) == len(self.train) else self.train.subset(splits.train)
        if self.mean is None or self.std is None:
            mean, std = channel_stats(train.images)
        else:
            mean, std = tuple(self.mean), tuple(self.std)
        c, h, w = train.image_shape
        return DataBundle(
            train=train,
            val=val,
            test=test,
            num_classes=len(self.classes),
            classes=list(self.classes),
            in_chans=c,
            image_size=(h, w),
            in_memory=True,
            mean=mean,
            std=std,
            name=self.display,
            train_augment=DeviceAugment(mean, std, crop_padding=self.crop_padding, flip=self.flip),
            eval_augment=DeviceAugment(mean, std),
        )
