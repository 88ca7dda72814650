"""Scenes as dense datasets: segmentation and detection over :mod:`patchswap.dense.scenes`, registered
as ``scenes`` (offline: made from the MNIST arrays under ``data_dir``)."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..seeding import SPLIT_BITS, derive_seed
from .base import DenseDataset, Transforms, dominant_box_classes, dominant_mask_classes
from .registry import DenseRequest, register_dense_dataset
from .scenes import Scenes, load_mnist_scenes

__all__ = ["DEFAULT_SCENE_COUNTS", "SceneDetection", "SceneSegmentation"]

DEFAULT_SCENE_COUNTS = {"train": 4000, "val": 1000, "test": 1000}
# Seed-derivation stages for the scene splits (train uses the seed itself).
_STAGE_SCENES_VAL, _STAGE_SCENES_TEST = 11, 12


class SceneSegmentation(DenseDataset):
    """Segmentation over in-memory :class:`~patchswap.dense.scenes.Scenes`."""

    def __init__(self, scenes: Scenes, transforms: Transforms | None = None) -> None:
        super().__init__("segment", scenes.classes, int(scenes.images.shape[1]), transforms)
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self._finish(self.scenes.images[index], self.scenes.masks[index].long())

    def pair_labels(self) -> np.ndarray:
        """Computed from the mask array in chunks, without building any item."""
        return dominant_mask_classes(self.scenes.masks, self.num_classes)


class SceneDetection(DenseDataset):
    """Detection over in-memory :class:`~patchswap.dense.scenes.Scenes` (one box per digit)."""

    def __init__(self, scenes: Scenes, transforms: Transforms | None = None) -> None:
        super().__init__("detect", scenes.classes, int(scenes.images.shape[1]), transforms)
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        # Clones: a transform that edits boxes in place must not change the stored scenes.
        target = {"boxes": self.scenes.boxes[index].clone(), "labels": self.scenes.labels[index].clone()}
        return self._finish(self.scenes.images[index], target)

    def pair_labels(self) -> np.ndarray:
        """Computed from the flat box arrays in one bincount."""
        boxes, labels, image_index = self.scenes.flat_boxes()
        return dominant_box_classes(boxes, labels, image_index, len(self.scenes), self.num_classes)


@register_dense_dataset("scenes", summary="MNIST digits pasted on a canvas")
def load_scenes(request: DenseRequest) -> DenseDataset:
    """Train and val scenes from disjoint MNIST training digits, test scenes from MNIST test digits;
    each split lays its scenes out with its own seed derived from ``request.seed``."""
    split, seed = request.split, request.seed
    stage_seed = {
        "train": seed,
        "val": derive_seed(seed, _STAGE_SCENES_VAL, bits=SPLIT_BITS),
        "test": derive_seed(seed, _STAGE_SCENES_TEST, bits=SPLIT_BITS),
    }[split]
    n = DEFAULT_SCENE_COUNTS[split] if request.scene_count is None else int(request.scene_count)
    scenes = load_mnist_scenes(request.data_dir, split, n, canvas=request.canvas, seed=stage_seed)
    return SceneSegmentation(scenes) if request.task == "segment" else SceneDetection(scenes)
