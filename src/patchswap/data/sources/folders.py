"""Image folders: ``folder:DIR`` (or a bare directory), decoded per item in DataLoader workers.

Layout: ``DIR/train/<class>/<images>`` with optional ``DIR/val/`` and ``DIR/test/`` beside it; the
class order (and so the label indices) comes from ``train/``. Images are cropped to ``image_size``
(default 224) by per-item transforms and normalized with ImageNet statistics, as pretrained
backbones expect. Splits carved off ``train/`` use the eval transform.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arrays import LabeledSubset
from ..bundle import IMAGENET_MEAN, IMAGENET_STD, DataBundle
from ..carve import SplitIndices
from ..registry import DatasetRequest, register_dataset
from ..transforms import DeviceAugment, folder_transform

__all__ = ["DEFAULT_FOLDER_IMAGE_SIZE", "FolderSource", "load_folder"]

DEFAULT_FOLDER_IMAGE_SIZE = 224


@dataclass
class FolderSource:
    """A scanned image folder before splitting: ``train`` (training transform), ``train_eval`` (the same
    samples with the eval transform, for carved val/test) and the given ``val``/``test`` folders."""

    display: str
    train: Any  # ImageFolder
    train_eval: Any
    val: Any | None
    test: Any | None
    classes: list[str]
    image_size: int
    default_test_split: float | int | None = None

    def labels(self) -> np.ndarray:
        return np.asarray(self.train.targets, dtype=np.int64)

    def bundle(self, splits: SplitIndices) -> DataBundle:
        """The bundle for carved ``splits``: subsets of the scanned samples, ImageNet statistics."""
        test = self.test if splits.test is None else LabeledSubset(self.train_eval, splits.test)
        val = self.val if splits.val is None else LabeledSubset(self.train_eval, splits.val)
        n = len(self.train.targets)
        train = self.train if len(splits.train) == n else LabeledSubset(self.train, splits.train)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        return DataBundle(
            train=train,
            val=val,
            test=test,
            num_classes=len(self.classes),
            classes=list(self.classes),
            in_chans=3,
            image_size=(self.image_size, self.image_size),
            in_memory=False,
            mean=mean,
            std=std,
            name=self.display,
            train_augment=DeviceAugment(mean, std),
            eval_augment=DeviceAugment(mean, std),
        )


def _class_dirs(directory: str) -> list[str]:
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())


def _scan_folder(directory: str, classes: list[str], train: bool, image_size: int) -> Any:
    """ImageFolder over ``directory`` with the *training* class -> index mapping and clear errors."""
    from torchvision.datasets import ImageFolder

    present = _class_dirs(directory)
    if not present:
        raise ValueError(f"{directory} has no class sub-folders; put images in {directory}/<class>/")
    extra = sorted(set(present) - set(classes))
    if extra:
        raise ValueError(f"{directory} has class folders {extra} that are not in the train/ folder")
    ds = ImageFolder(directory, transform=folder_transform(image_size, train), allow_empty=True)
    counts = np.bincount(np.asarray(ds.targets, dtype=np.int64), minlength=len(ds.classes))
    empty = [os.path.join(directory, c) for c, n in zip(ds.classes, counts, strict=True) if n == 0]
    if empty:
        raise ValueError(f"class folder(s) with no images: {', '.join(empty)}")
    if ds.classes != classes:  # val/ or test/ lacking a class: re-index to the train/ mapping
        class_to_idx = {c: i for i, c in enumerate(classes)}
        ds.samples = [(path, class_to_idx[ds.classes[t]]) for path, t in ds.samples]
        ds.imgs = ds.samples
        ds.targets = [t for _, t in ds.samples]
        ds.classes, ds.class_to_idx = list(classes), class_to_idx
    return ds


def _claims(text: str) -> bool:
    """A bare existing directory selects this family."""
    return os.path.isdir(os.path.expanduser(text))


@register_dataset(
    "folder", prefix="folder:", pattern="folder:PATH", claims=_claims, summary="PATH/train/<class>/ images"
)
def load_folder(request: DatasetRequest) -> FolderSource:
    """Scan ``request.argument``'s ``train/`` (and ``val/``, ``test/``) folders."""
    if not request.argument:
        raise ValueError("'folder:' needs a directory: folder:PATH")
    from torchvision.datasets.vision import StandardTransform

    root = os.path.abspath(os.path.expanduser(request.argument))
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise ValueError(
            f"image folder {root} has no train/ directory ({train_dir} is missing); expected "
            f"{root}/train/<class>/<image files> with optional val/ and test/ next to it"
        )
    classes = _class_dirs(train_dir)
    image_size = request.image_size
    size = int(image_size) if image_size is not None else DEFAULT_FOLDER_IMAGE_SIZE
    if size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    train = _scan_folder(train_dir, classes, True, size)
    # A second ImageFolder object over the same scanned samples, with the eval-time per-item transform,
    # for val/test carved off train/ (no second directory walk).
    train_eval = copy.copy(train)
    train_eval.transform = folder_transform(size, False)
    train_eval.transforms = StandardTransform(train_eval.transform, None)
    val_dir, test_dir = os.path.join(root, "val"), os.path.join(root, "test")
    val = _scan_folder(val_dir, classes, False, size) if os.path.isdir(val_dir) else None
    test = _scan_folder(test_dir, classes, False, size) if os.path.isdir(test_dir) else None
    return FolderSource("folder:" + root, train, train_eval, val, test, classes, size)
