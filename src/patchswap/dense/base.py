"""The dense dataset interface every source follows: :class:`DenseDataset`, pair labels, collate.

Sample conventions (every :class:`DenseDataset` follows them, whatever the source):

* ``task == "segment"``: ``(image uint8 [C, H, W], mask int64 [H, W])``; class 0 is background and
  ``IGNORE_INDEX`` (255) marks pixels that count for no class (VOC borders, COCO crowds).
* ``task == "detect"``: ``(image uint8 [C, H, W], {"boxes": float32 [n, 4], "labels": int64 [n]})``;
  boxes are xyxy in pixels (x2/y2 exclusive, as torchvision detection models expect) and labels lie in
  ``1..K-1`` because index 0 of ``classes`` is ``"background"``.

Intra-class Patch Swap pairs images that share a class, so each dataset also gives one class per image
(:meth:`DenseDataset.pair_labels`): the foreground class covering the most mask pixels (segment) or with
the largest total box area (detect); ties go to the lower class index and images without foreground get
0. It is computed from annotations only and never decodes an image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "IGNORE_INDEX",
    "SPLITS",
    "TASKS",
    "DenseDataset",
    "Target",
    "Transforms",
    "check_task",
    "collate_dense",
    "dominant_box_classes",
    "dominant_classes",
    "dominant_mask_classes",
    "per_image_dominant",
    "read_rgb",
]

TASKS = ("segment", "detect")
SPLITS = ("train", "val", "test")
IGNORE_INDEX = 255
# Masks per bincount chunk in dominant_mask_classes: bounds the int64 copy to ~32 MiB at 64x64.
_MASK_CHUNK = 1024

Target = Any  # mask Tensor (segment) or {"boxes", "labels"} dict (detect)
Transforms = Callable[[Tensor, Target], tuple[Tensor, Target]]


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`, else a ValueError naming them."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return task


# ---------------------------------------------------------------------------------------------------
# Pair labels from annotations
# ---------------------------------------------------------------------------------------------------
def dominant_classes(weights: np.ndarray) -> np.ndarray:
    """Per row, the foreground column (>= 1) with the largest weight; 0 for rows without foreground."""
    weights = weights.copy()
    weights[:, 0] = 0
    best = weights.argmax(axis=1).astype(np.int64)
    best[weights.max(axis=1, initial=0) <= 0] = 0
    return best


def dominant_mask_classes(masks: Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """The foreground class covering the most pixels of each mask ``[N, H, W]``; 255 and 0 never win."""
    masks = masks.numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    out = np.zeros(len(masks), dtype=np.int64)
    for start in range(0, len(masks), _MASK_CHUNK):
        chunk = masks[start : start + _MASK_CHUNK]
        n = len(chunk)
        values = chunk.reshape(n, -1).astype(np.int64)
        values[(values < 0) | (values >= num_classes)] = 0  # ignore pixels count as background
        values += np.arange(n, dtype=np.int64)[:, None] * num_classes
        counts = np.bincount(values.ravel(), minlength=n * num_classes).reshape(n, num_classes)
        out[start : start + n] = dominant_classes(counts)
    return out


def dominant_box_classes(
    boxes: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    image_index: Tensor | np.ndarray,
    num_images: int,
    num_classes: int,
) -> np.ndarray:
    """The class with the largest total box area per image, from flat ``[M, 4]`` boxes and their image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64)
    image_index = np.asarray(image_index, dtype=np.int64)
    areas = (boxes[:, 2] - boxes[:, 0]).clip(min=0) * (boxes[:, 3] - boxes[:, 1]).clip(min=0)
    slot = image_index * num_classes + labels
    totals = np.bincount(slot, weights=areas, minlength=num_images * num_classes)
    return dominant_classes(totals.reshape(num_images, num_classes))


def per_image_dominant(areas: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int) -> np.ndarray:
    """``[(labels, areas) per image]`` -> dominant class per image (for sources parsed one by one)."""
    counts = np.array([len(lab) for lab, _ in areas], dtype=np.int64)
    labels = np.concatenate([lab for lab, _ in areas]) if areas else np.zeros(0, np.int64)
    weights = np.concatenate([w for _, w in areas]) if areas else np.zeros(0)
    slot = np.repeat(np.arange(len(areas)), counts) * num_classes + labels.astype(np.int64)
    totals = np.bincount(slot, weights=weights, minlength=len(areas) * num_classes)
    return dominant_classes(totals.reshape(len(areas), num_classes))


# ---------------------------------------------------------------------------------------------------
# The base class
# ---------------------------------------------------------------------------------------------------
class DenseDataset(Dataset):
    """Base of every dense dataset: ``task``, ``classes`` (0 = background), ``in_chans``, pair labels.

    ``transforms(image, target) -> (image, target)`` runs on each item after decoding, if given.
    """

    task: str
    classes: list[str]
    in_chans: int

    def __init__(
        self, task: str, classes: Sequence[str], in_chans: int, transforms: Transforms | None = None
    ) -> None:
        self.task = check_task(task)
        self.classes = list(classes)
        self.in_chans = int(in_chans)
        self.transforms = transforms
        if not self.classes or self.classes[0] != "background":
            raise ValueError(f"classes must start with 'background', got {self.classes[:3]}...")

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.classes)

    def pair_labels(self) -> np.ndarray:
        """One class per image (int64 ``[len]``) for pairing images that share a class; 0 = none."""
        raise NotImplementedError

    def _finish(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        return (image, target) if self.transforms is None else self.transforms(image, target)

    def __len__(self) -> int:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------
# Reading images and batching items
# ---------------------------------------------------------------------------------------------------
def read_rgb(path: str | Path, in_chans: int = 3) -> Tensor:
    """An image file as uint8 ``[C, H, W]`` (RGB for 3 channels, grayscale for 1)."""
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB" if in_chans == 3 else "L"))
    tensor = torch.from_numpy(array.copy())
    return tensor.permute(2, 0, 1).contiguous() if tensor.ndim == 3 else tensor.unsqueeze(0)


def _stack_or_list(images: list[Tensor]) -> Tensor | list[Tensor]:
    same = all(img.shape == images[0].shape for img in images)
    return torch.stack(images) if images and same else images


def _collate_segment(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    images, masks = [b[0] for b in batch], [b[1] for b in batch]
    if any(img.shape != images[0].shape for img in images) or any(m.shape != masks[0].shape for m in masks):
        sizes = sorted({tuple(img.shape) for img in images})
        raise ValueError(
            f"segmentation batch has images of different sizes {sizes[:4]}; resize or crop them to one "
            f"size in the dataset's transforms before batching"
        )
    return torch.stack(images), torch.stack(masks)


def _collate_detect(
    batch: Sequence[tuple[Tensor, dict[str, Tensor]]],
) -> tuple[Tensor | list[Tensor], list[dict[str, Tensor]]]:
    return _stack_or_list([b[0] for b in batch]), [b[1] for b in batch]


def collate_dense(task: str) -> Callable[[Sequence[tuple[Tensor, Target]]], tuple[Any, Any]]:
    """DataLoader ``collate_fn`` for ``task``.

    Segment: stacked images ``[B, C, H, W]`` and masks ``[B, H, W]`` (same size required). Detect:
    images stacked when they share a size, else a list; targets always a list of dicts.
    """
    return _collate_segment if check_task(task) == "segment" else _collate_detect
