"""Datasets for patchswap: named loaders, honest stratified splits, and the fast in-memory path.

``build_data(name, ...)`` returns a :class:`DataBundle` whose datasets all expose ``.targets`` (labels
without decoding images) and yield uint8 ``[C, H, W]`` images; the bundle's :class:`DeviceAugment`
modules turn uint8 batches into normalized float32 on the training device.
"""

from .arrays import ImageBatch, LabeledSubset, TensorImageDataset, collate_batch
from .sources import DataBundle, DatasetNotFoundError, available_datasets, build_data
from .splits import stratified_split
from .transforms import DeviceAugment, folder_transform

__all__ = [
    "DataBundle",
    "DatasetNotFoundError",
    "DeviceAugment",
    "ImageBatch",
    "LabeledSubset",
    "TensorImageDataset",
    "available_datasets",
    "build_data",
    "collate_batch",
    "folder_transform",
    "stratified_split",
]
