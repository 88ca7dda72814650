"""Image folders: ``folder:DIR`` (or a bare directory), decoded a batch at a time in DataLoader workers.

Layout: ``DIR/train/<class>/<images>`` with optional ``DIR/val/`` and ``DIR/test/`` beside it; the
class order (and so the label indices) comes from ``train/``. Files are decoded with torchvision.io and
cropped/resized/flipped as uint8 tensors (:class:`~patchswap.data.folder_images.FolderImages`); the
normalisation runs batched on the device. Input size and mean/std: ``image_size`` when given, else
the pretrained model's own (``model_input``), else 224 and the ImageNet statistics. Splits carved off
``train/`` use the eval crop. Unusable files are left out before training (``on_bad_image``); an empty
class folder, or a ``val/``/``test/`` class that ``train/`` lacks, is an error before training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..arrays import LabeledSubset
from ..bundle import IMAGENET_MEAN, IMAGENET_STD, DataBundle
from ..carve import SplitIndices
from ..folder_images import FolderImages, scan_images
from ..registry import DatasetRequest, register_dataset
from ..transforms import DeviceAugment

__all__ = ["DEFAULT_FOLDER_IMAGE_SIZE", "FolderSource", "load_folder"]

DEFAULT_FOLDER_IMAGE_SIZE = 224


@dataclass
class FolderSource:
    """A scanned image folder before splitting: ``train`` (training crop), ``train_eval`` (the same
    samples with the eval crop, for carved val/test) and the given ``val``/``test`` folders."""

    display: str
    train: FolderImages
    train_eval: FolderImages
    val: FolderImages | None
    test: FolderImages | None
    classes: list[str]
    image_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    default_test_split: float | int | None = None

    def labels(self) -> np.ndarray:
        return self.train.targets.numpy()

    def bundle(self, splits: SplitIndices) -> DataBundle:
        """The bundle for carved ``splits``: subsets of the scanned samples; normalisation on the device."""
        test = self.test if splits.test is None else LabeledSubset(self.train_eval, splits.test)
        val = self.val if splits.val is None else LabeledSubset(self.train_eval, splits.val)
        n = len(self.train)
        train = self.train if len(splits.train) == n else LabeledSubset(self.train, splits.train)
        mean, std = tuple(self.mean), tuple(self.std)
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
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir() and entry.name[0] != ".")


def _scan_folder(
    directory: str, classes: list[str], train: bool, image_size: int, on_bad_image: str
) -> FolderImages:
    """The images of ``directory`` with the *training* class -> index mapping, and clear errors."""
    present = _class_dirs(directory)
    if not present:
        raise ValueError(f"{directory} has no class sub-folders; put images in {directory}/<class>/")
    extra = sorted(set(present) - set(classes))
    if extra:
        raise ValueError(
            f"{directory} has class folder(s) {extra} that the train/ folder lacks: a model trained on "
            "train/ cannot predict them; add them to train/ or remove them"
        )
    samples, bad = scan_images(directory, present, on_bad_image)
    counts = np.bincount(np.asarray([t for _, t in samples], dtype=np.int64), minlength=len(present))
    empty = [os.path.join(directory, c) for c, k in zip(present, counts, strict=True) if k == 0]
    if empty:
        raise ValueError(f"class folder(s) with no usable images: {', '.join(empty)}")
    index = {c: i for i, c in enumerate(classes)}  # val/ or test/ lacking a class: train/'s indices
    samples = [(path, index[present[t]]) for path, t in samples]
    return FolderImages(samples, classes, image_size, train=train, on_bad_image=on_bad_image, bad=bad)


def _claims(text: str) -> bool:
    """A bare existing directory selects this family."""
    return os.path.isdir(os.path.expanduser(text))


def _input(
    image_size: int | None, model_input: Sequence | None
) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Crop size and statistics: the config's size, else the pretrained model's, else 224/ImageNet."""
    size, mean, std = DEFAULT_FOLDER_IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
    if model_input is not None:
        size, mean, std = int(model_input[0]), tuple(model_input[1]), tuple(model_input[2])
    if image_size is not None:
        size = int(image_size)
    if size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"image folders are RGB: mean/std need 3 values, got {mean} and {std}")
    return size, tuple(float(v) for v in mean), tuple(float(v) for v in std)


@register_dataset(
    "folder", prefix="folder:", pattern="folder:PATH", claims=_claims, summary="PATH/train/<class>/ images"
)
def load_folder(request: DatasetRequest) -> FolderSource:
    """Scan ``request.argument``'s ``train/`` (and ``val/``, ``test/``) folders."""
    if not request.argument:
        raise ValueError("'folder:' needs a directory: folder:PATH")
    root = os.path.abspath(os.path.expanduser(request.argument))
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        relative = ""
        if not os.path.isabs(os.path.expanduser(request.argument)):
            relative = (
                f" ({request.argument!r} is relative to the current folder, {os.getcwd()}: give an absolute "
                "path, or run from the folder it is in; a run keeps its data path as it was given, so run "
                "commands on a run from the folder it was trained in)"
            )
        raise ValueError(
            f"image folder {root} has no train/ directory ({train_dir} is missing){relative}; expected "
            f"{root}/train/<class>/<image files> with optional val/ and test/ next to it"
        )
    size, mean, std = _input(request.image_size, request.model_input)
    classes = _class_dirs(train_dir)
    bad = request.on_bad_image
    train = _scan_folder(train_dir, classes, True, size, bad)
    train_eval = train.with_train(False)
    val_dir, test_dir = os.path.join(root, "val"), os.path.join(root, "test")
    val = _scan_folder(val_dir, classes, False, size, bad) if os.path.isdir(val_dir) else None
    test = _scan_folder(test_dir, classes, False, size, bad) if os.path.isdir(test_dir) else None
    return FolderSource("folder:" + root, train, train_eval, val, test, classes, size, mean, std)
