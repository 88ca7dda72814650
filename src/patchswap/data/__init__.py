"""Datasets for patchswap: named loaders, honest stratified splits, and the fast in-memory path.

``build_data(name, ...)`` returns a :class:`DataBundle` whose datasets all expose ``.targets`` (labels
without decoding images) and yield uint8 ``[C, H, W]`` images; the bundle's :class:`DeviceAugment`
modules turn uint8 batches into normalized float32 on the training device. ``label_noise`` flips
train/val labels for noisy-label experiments (:mod:`patchswap.data.noise`).

Datasets are registered by name (:func:`register_dataset`, :mod:`patchswap.data.registry`); the
built-in families live in :mod:`patchswap.data.sources`, and every split is carved by
:func:`carve_splits`.
"""

from .arrays import ImageBatch, LabeledSubset, TensorImageDataset, collate_batch
from .build import build_data, build_data_from_section
from .bundle import DataBundle
from .carve import SplitIndices, carve_splits
from .folder_images import BadImageError, FolderImages
from .noise import LabelNoise, apply_label_noise, noisy_labels, realised_noise_rate
from .registry import (
    DatasetNotFoundError,
    DatasetRequest,
    available_datasets,
    dataset_entry,
    register_dataset,
)
from .sources import FolderSource, MemorySource
from .splits import stratified_split
from .transforms import DeviceAugment

__all__ = [
    "BadImageError",
    "DataBundle",
    "DatasetNotFoundError",
    "DatasetRequest",
    "DeviceAugment",
    "FolderImages",
    "FolderSource",
    "ImageBatch",
    "LabelNoise",
    "LabeledSubset",
    "MemorySource",
    "SplitIndices",
    "TensorImageDataset",
    "apply_label_noise",
    "available_datasets",
    "build_data",
    "build_data_from_section",
    "carve_splits",
    "collate_batch",
    "dataset_entry",
    "noisy_labels",
    "realised_noise_rate",
    "register_dataset",
    "stratified_split",
]
