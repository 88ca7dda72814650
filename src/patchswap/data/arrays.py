"""In-memory image dataset: uint8 tensors, batched indexing, labels without decoding.

Small datasets (CIFAR, MNIST, SVHN, digits, npz arrays) fit in memory as one uint8 tensor. Fetching a
batch is then a single tensor index (``__getitems__``) instead of ``batch_size`` Python calls plus a
collate, and the whole dataset can even live on the training device (:meth:`TensorImageDataset.to`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, default_collate

__all__ = ["ImageBatch", "LabeledSubset", "TensorImageDataset", "collate_batch"]


class ImageBatch(NamedTuple):
    """An already-batched ``(images uint8 [B, C, H, W], labels int64 [B])`` pair."""

    images: torch.Tensor
    labels: torch.Tensor


def _as_index(indices: Sequence[int] | np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(indices, torch.Tensor):
        idx = indices.to(device=device, dtype=torch.long)
    else:
        idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        if device.type == "cuda":  # from pinned memory: the copy does not wait for the queued GPU work
            idx = idx.pin_memory().to(device, non_blocking=True)
        elif device.type != "cpu":
            idx = idx.to(device)
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(idx.shape)}")
    return idx


class TensorImageDataset(Dataset):
    """Images held as one uint8 ``[N, C, H, W]`` tensor with int64 labels ``[N]``.

    ``targets`` is exposed directly so class-aware samplers never touch the images. ``__getitems__``
    returns a whole batch from one tensor index; use :func:`collate_batch` as the DataLoader's
    ``collate_fn`` so that batch passes through unchanged.
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        targets: torch.Tensor | np.ndarray | Sequence[int],
        classes: Sequence[str],
    ) -> None:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dtype != torch.uint8:
            raise ValueError(
                f"images must have dtype torch.uint8 (0..255 pixels), got {images.dtype}; "
                "convert with (x * 255).round().clamp(0, 255).to(torch.uint8) if they are floats in [0, 1]"
            )
        if images.ndim != 4:
            raise ValueError(
                f"images must be 4-D [N, C, H, W], got shape {tuple(images.shape)}; add a channel axis "
                "with images.unsqueeze(1) for grayscale [N, H, W], or permute(0, 3, 1, 2) for NHWC"
            )
        if not isinstance(targets, torch.Tensor):
            targets = torch.as_tensor(np.asarray(targets))
        if targets.ndim != 1:
            raise ValueError(f"targets must be 1-D [N], got shape {tuple(targets.shape)}")
        if targets.numel() and (
            targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool
        ):
            raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
        targets = targets.to(torch.int64)
        if targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"images and targets must have the same length, got {images.shape[0]} images and "
                f"{targets.shape[0]} targets"
            )
        if targets.device != images.device:
            targets = targets.to(images.device)
        classes = [str(c) for c in classes]
        if targets.numel():
            lo, hi = int(targets.min()), int(targets.max())
            if lo < 0:
                raise ValueError(f"targets must be non-negative class indices, found {lo}")
            if hi >= len(classes):
                raise ValueError(
                    f"targets go up to {hi} but only {len(classes)} class names were given; pass one name "
                    "per class index"
                )
        self.images = images
        self.targets = targets
        self.classes = classes

    # -- Dataset protocol ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def __getitems__(self, indices: Sequence[int]) -> ImageBatch:
        """Whole batch by one tensor index; torch's DataLoader calls this when it exists."""
        idx = _as_index(indices, self.images.device)
        return ImageBatch(self.images[idx], self.targets[idx])

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TensorImageDataset:
        """A dataset whose tensors live on ``device`` (device-resident training: no host copies)."""
        return TensorImageDataset(
            self.images.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
            self.classes,
        )

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> TensorImageDataset:
        """A new dataset with the selected rows (copied), keeping class names and indices."""
        idx = _as_index(indices, self.images.device)
        return TensorImageDataset(self.images[idx], self.targets[idx], self.classes)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"TensorImageDataset(n={len(self)}, shape={c}x{h}x{w}, classes={len(self.classes)}, "
            f"device={self.device})"
        )


class LabeledSubset(Subset):
    """``torch.utils.data.Subset`` that still exposes ``.targets`` (and ``.classes``) of its rows.

    Samplers need the labels of a carved-off split without decoding images.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | np.ndarray) -> None:
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        super().__init__(dataset, idx)
        base = getattr(dataset, "targets", None)
        if base is None:
            raise ValueError(f"{type(dataset).__name__} has no .targets; LabeledSubset needs the labels")
        base_t = torch.as_tensor(np.asarray(base.cpu() if isinstance(base, torch.Tensor) else base))
        self.targets = base_t.to(torch.int64)[torch.as_tensor(idx, dtype=torch.long)]
        self.classes = list(getattr(dataset, "classes", []))


def collate_batch(batch: Any) -> Any:
    """DataLoader ``collate_fn``: pass an already-batched ``(images, labels)`` through, else collate.

    ``TensorImageDataset.__getitems__`` returns a finished :class:`ImageBatch`; every other dataset
    returns a list of samples, which goes to ``torch.utils.data.default_collate``.
    """
    if isinstance(batch, ImageBatch):
        return batch
    if (
        isinstance(batch, tuple)
        and len(batch) == 2
        and isinstance(batch[0], torch.Tensor)
        and isinstance(batch[1], torch.Tensor)
        and batch[0].ndim == 4
        and batch[1].ndim == 1
        and batch[0].shape[0] == batch[1].shape[0]
    ):
        return ImageBatch(batch[0], batch[1])
    return default_collate(batch)
