"""Pascal VOC through torchvision's file lists: segmentation and detection, registered as ``voc`` /
``voc2012`` and ``voc2007`` (files under ``data_dir/VOCdevkit``).

VOC has no separate validation split with public labels beyond its official held-out set (2012 val,
2007 test), so each entry declares that set as ``held_out``: the trainer reports on it and carves its
own validation images out of train.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.registry import DatasetNotFoundError
from .base import DenseDataset, Transforms, dominant_classes, per_image_dominant, read_rgb
from .registry import DenseRequest, register_dense_dataset

__all__ = ["VOC_CLASSES", "VOCDetection", "VOCSegmentation"]

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _read_palette_mask(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img).copy()


def _voc_missing(root: str, year: str, image_set: str, what: str) -> str:
    return (
        f"Pascal VOC{year} {what} ({image_set}) not found under {root}: expected "
        f"{os.path.join(root, 'VOCdevkit', f'VOC{year}')}/ with JPEGImages/, the annotations and "
        f"ImageSets/. Pass --data.download true on a machine with internet access, or point "
        f"--data.data_dir at the folder that holds VOCdevkit/."
    )


def _open_voc(kind: str, root: str | Path, year: str, image_set: str, download: bool) -> Any:
    """torchvision's VOC dataset (file lists only), with clear errors for bad options or missing files."""
    from torchvision import datasets

    year = str(year)
    if year not in ("2007", "2012"):
        raise ValueError(f"VOC year must be '2007' or '2012', got {year!r}")
    sets = ("train", "val", "trainval", "test") if year == "2007" else ("train", "val", "trainval")
    if image_set not in sets:
        hint = " (VOC2012 test annotations are not public; evaluate on val)" if image_set == "test" else ""
        raise ValueError(f"VOC{year} image_set must be one of {sets}, got {image_set!r}{hint}")
    root = os.path.abspath(os.path.expanduser(str(root)))
    what = "segmentation" if kind == "VOCSegmentation" else "detection"
    try:
        return getattr(datasets, kind)(root, year=year, image_set=image_set, download=download)
    except (RuntimeError, OSError) as err:  # missing folder / split file, or an offline download
        raise DatasetNotFoundError(f"{_voc_missing(root, year, image_set, what)} ({err})") from err


class _VOCDataset(DenseDataset):
    """What both VOC tasks share: torchvision's file lists of one year and image set, the 20 classes and
    background, and the length."""

    task: str
    torchvision_class: str

    def __init__(
        self,
        root: str | Path,
        year: str = "2012",
        image_set: str = "train",
        download: bool = False,
        transforms: Transforms | None = None,
    ) -> None:
        super().__init__(self.task, ["background", *VOC_CLASSES], 3, transforms)
        self.voc = _open_voc(self.torchvision_class, root, year, image_set, download)
        self._pair_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.voc.images)


class VOCSegmentation(_VOCDataset):
    """Pascal VOC semantic segmentation: 20 classes + background; the 255 border stays ignore.

    ``pair_labels`` reads every mask PNG once (never the JPEGs) and caches the result in memory and in
    ``VOCdevkit/VOC<year>/patchswap-pair-labels-<image_set>.npy`` (skipped if the folder is read-only).
    """

    task, torchvision_class = "segment", "VOCSegmentation"

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = read_rgb(self.voc.images[index])
        mask = torch.from_numpy(_read_palette_mask(self.voc.targets[index]).astype(np.int64))
        return self._finish(image, mask)

    def _cache_path(self) -> Path:
        return Path(self.voc.targets[0]).parents[1] / f"patchswap-pair-labels-{self.voc.image_set}.npy"

    def pair_labels(self) -> np.ndarray:
        """Dominant class per mask PNG, cached (see the class docstring)."""
        if self._pair_labels is not None:
            return self._pair_labels
        cache = self._cache_path() if len(self) else None
        if cache is not None and cache.is_file():
            cached = np.load(cache)
            if cached.shape == (len(self),):
                self._pair_labels = cached.astype(np.int64)
                return self._pair_labels
        counts = np.zeros((len(self), 256), dtype=np.int64)
        for i, path in enumerate(self.voc.targets):
            counts[i] = np.bincount(_read_palette_mask(path).ravel(), minlength=256)[:256]
        self._pair_labels = dominant_classes(counts[:, : self.num_classes])
        if cache is not None:
            with contextlib.suppress(OSError):
                np.save(cache, self._pair_labels)
        return self._pair_labels


class VOCDetection(_VOCDataset):
    """Pascal VOC detection: XML boxes (1-based, inclusive) to 0-based xyxy pixels, 20 classes.

    Objects marked ``difficult`` are dropped unless ``keep_difficult``. ``pair_labels`` parses the XML
    files once (no image decoding) and keeps the result in memory.
    """

    task, torchvision_class = "detect", "VOCDetection"

    def __init__(
        self,
        root: str | Path,
        year: str = "2012",
        image_set: str = "train",
        download: bool = False,
        keep_difficult: bool = False,
        transforms: Transforms | None = None,
    ) -> None:
        super().__init__(root, year, image_set, download, transforms)
        self.keep_difficult = keep_difficult

    def parse_annotation(self, index: int) -> dict[str, Tensor]:
        """Boxes and labels of one image from its XML file."""
        from torchvision.datasets.voc import ET_parse

        path = self.voc.annotations[index]
        tree = self.voc.parse_voc_xml(ET_parse(path).getroot())
        objects = tree.get("annotation", {}).get("object", [])
        boxes, labels = [], []
        for obj in objects if isinstance(objects, list) else [objects]:
            if not self.keep_difficult and str(obj.get("difficult", "0")).strip() == "1":
                continue
            name = str(obj.get("name", "")).strip()
            if name not in VOC_CLASSES:
                raise ValueError(f"{path}: unknown VOC class {name!r}; expected one of {VOC_CLASSES}")
            box = obj["bndbox"]
            x1, y1, x2, y2 = (float(box[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x1 - 1.0, y1 - 1.0, x2, y2])
            labels.append(VOC_CLASSES.index(name) + 1)
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self._finish(read_rgb(self.voc.images[index]), self.parse_annotation(index))

    def pair_labels(self) -> np.ndarray:
        """Dominant class per image by total box area, from the XML files only (cached in memory)."""
        if self._pair_labels is None:
            per_image = []
            for i in range(len(self)):
                target = self.parse_annotation(i)
                b = target["boxes"].numpy().astype(np.float64)
                per_image.append((target["labels"].numpy(), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            self._pair_labels = per_image_dominant(per_image, self.num_classes)
        return self._pair_labels


def _voc_loader(year: str):
    def load(request: DenseRequest) -> DenseDataset:
        cls = VOCSegmentation if request.task == "segment" else VOCDetection
        return cls(request.data_dir, year=year, image_set=request.split, download=request.download)

    return load


register_dense_dataset("voc", _voc_loader("2012"), summary="Pascal VOC2012", held_out="val")
register_dense_dataset("voc2012", _voc_loader("2012"), summary="Pascal VOC2012", held_out="val")
register_dense_dataset("voc2007", _voc_loader("2007"), summary="Pascal VOC2007", held_out="test")
