"""Dense datasets for segmentation and detection: the built-in families and :func:`build_dense_dataset`.

Importing this module registers the families, one file each: ``scenes`` (MNIST digits pasted on a
canvas, offline; :mod:`.scene_datasets`), ``voc`` / ``voc2012`` and ``voc2007`` (torchvision's Pascal
VOC under ``data_dir/VOCdevkit``; :mod:`.voc`) and ``coco:DIR`` (a COCO-format folder; :mod:`.coco`).
The item conventions and pair labels are in :mod:`.base`, the name lookup in :mod:`.registry`; this
module re-exports their public names so ``from patchswap.dense.datasets import ...`` keeps working.
"""

from __future__ import annotations

from .base import (
    IGNORE_INDEX,
    SPLITS,
    TASKS,
    DenseDataset,
    collate_dense,
    dominant_box_classes,
    dominant_mask_classes,
)
from .coco import CocoFolder
from .registry import (
    DenseRequest,
    available_dense_datasets,
    build_dense_dataset,
    dense_dataset_entry,
    register_dense_dataset,
)
from .scene_datasets import DEFAULT_SCENE_COUNTS, SceneDetection, SceneSegmentation
from .voc import VOC_CLASSES, VOCDetection, VOCSegmentation

__all__ = [
    "DEFAULT_SCENE_COUNTS",
    "IGNORE_INDEX",
    "SPLITS",
    "TASKS",
    "VOC_CLASSES",
    "CocoFolder",
    "DenseDataset",
    "DenseRequest",
    "SceneDetection",
    "SceneSegmentation",
    "VOCDetection",
    "VOCSegmentation",
    "available_dense_datasets",
    "build_dense_dataset",
    "collate_dense",
    "dense_dataset_entry",
    "dominant_box_classes",
    "dominant_mask_classes",
    "register_dense_dataset",
]
