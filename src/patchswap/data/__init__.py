"""Datasets for patchswap: named loaders, honest stratified splits, and the fast in-memory path.

``build_data(name, ...)`` returns a :class:`DataBundle` whose datasets all expose ``.targets`` (labels
without decoding images) and yield uint8 ``[C, H, W]`` images; the bundle's :class:`DeviceAugment`
modules turn uint8 batches into normalized float32 on the training device. ``label_noise`` flips
train/val labels for noisy-label experiments (:mod:`patchswap.data.noise`).
"""

from .arrays import ImageBatch, LabeledSubset, TensorImageDataset, collate_batch
from .noise import LabelNoise, apply_label_noise, noisy_labels, realised_noise_rate
from .sources import DataBundle, DatasetNotFoundError, available_datasets, build_data
from .splits import stratified_split
from .transforms import DeviceAugment, folder_transform

__all__ = [
    "DataBundle",
    "DatasetNotFoundError",
    "DeviceAugment",
    "ImageBatch",
    "LabelNoise",
    "LabeledSubset",
    "TensorImageDataset",
    "apply_label_noise",
    "available_datasets",
    "build_data",
    "collate_batch",
    "folder_transform",
    "noisy_labels",
    "realised_noise_rate",
    "stratified_split",
]
