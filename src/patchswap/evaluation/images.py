"""The images of an evaluation split: uint8 ``[C, H, W]`` images and labels, in fixed-size chunks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..seeding import generator

__all__ = ["SEED_BITS", "ImageSource", "chunk_size"]

# The suite's streams: (seed, SUBSET_STREAM) picks the --max-images subset, (seed, corruption, chunk)
# corrupts one chunk. 31-bit seeds: the width of the recorded results (see patchswap.seeding).
SUBSET_STREAM = 7
SEED_BITS = 31


def _collate(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch[0], torch.as_tensor(batch[1])
    images = torch.stack([torch.as_tensor(x) for x, _ in batch])
    return images, torch.as_tensor([int(y) for _, y in batch], dtype=torch.long)


class ImageSource:
    """The uint8 ``[C, H, W]`` images and labels of an evaluation split, optionally a seeded subset.

    In-memory datasets (with ``images`` and ``targets`` tensors) are sliced directly; any other
    dataset (image folders) is read through a DataLoader, so the split never has to fit in memory.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        max_images: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        self.dataset = dataset
        n = len(dataset)  # type: ignore[arg-type]
        if max_images is not None and max_images < n:
            gen = generator(seed, SUBSET_STREAM, bits=SEED_BITS)
            self.indices = torch.randperm(n, generator=gen)[:max_images].sort().values
        else:
            self.indices = torch.arange(n)
        self.num_workers = num_workers
        images = getattr(dataset, "images", None)
        targets = getattr(dataset, "targets", None)
        self._tensors = isinstance(images, torch.Tensor) and isinstance(targets, torch.Tensor)

    @classmethod
    def from_tensors(cls, images: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> ImageSource:
        """A source over uint8 ``images [N, C, H, W]`` and ``labels [N]``."""
        ds = _TensorPair(images, labels)
        return cls(ds, **kwargs)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images (read from the first one)."""
        if self._tensors:
            h, w = self.dataset.images.shape[-2:]  # type: ignore[attr-defined]
        else:
            h, w = torch.as_tensor(self.dataset[int(self.indices[0])][0]).shape[-2:]
        return int(h), int(w)

    def batches(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive ``(uint8 images, int64 labels)`` chunks of ``size`` (the last may be smaller)."""
        if self._tensors:
            images, targets = self.dataset.images, self.dataset.targets  # type: ignore[attr-defined]
            for start in range(0, len(self.indices), size):
                idx = self.indices[start : start + size].to(images.device)
                yield images[idx], targets[idx].long()
            return
        loader = DataLoader(
            self.dataset,
            batch_size=size,
            sampler=self.indices.tolist(),
            num_workers=self.num_workers,
            collate_fn=_collate,
        )
        yield from loader


class _TensorPair(Dataset):
    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])


def chunk_size(height: int, width: int) -> int:
    """Images corrupted per call: fixed by the image size alone, so corrupted sets never depend on
    the batch size (1,024 at 32x32, 41 at 224x224)."""
    return int(min(1024, max(16, (1 << 21) // max(1, height * width))))
