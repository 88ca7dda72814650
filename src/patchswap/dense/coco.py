"""COCO-format folders: :class:`CocoFolder`, registered as ``coco:DIR`` (one annotation file per
split, images under ``DIR/images/<split>/`` or beside the annotations)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import IGNORE_INDEX, DenseDataset, Target, Transforms, per_image_dominant, read_rgb
from .registry import DenseRequest, register_dense_dataset

__all__ = ["CocoFolder"]


class CocoFolder(DenseDataset):
    """A COCO-format folder: ``root/annotations.json`` (or ``split_file``) and images.

    Images are looked up as ``image_dir/<file_name>`` (when given), ``root/images/<file_name>``, then
    ``root/<file_name>``. Category ids map to labels 1..K-1 in sorted id order, named by the categories.
    Detection skips crowd annotations and zero-area boxes; segmentation paints annotations in file order
    (later over earlier) and crowd regions as ``IGNORE_INDEX``. ``pair_labels`` uses each annotation's
    ``area`` (its pixel area, computed from the segmentation when absent) for segmentation and the box
    area for detection, so overlaps between annotations are not subtracted.
    """

    def __init__(
        self,
        root: str | Path,
        task: str,
        split_file: str | Path | None = None,
        *,
        image_dir: str | Path | None = None,
        in_chans: int = 3,
        transforms: Transforms | None = None,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"COCO folder not found: {self.root}; give an existing directory")
        ann = Path(split_file) if split_file is not None else Path("annotations.json")
        self.annotation_file = ann if ann.is_absolute() else self.root / ann
        if not self.annotation_file.is_file():
            raise FileNotFoundError(
                f"COCO annotation file not found: {self.annotation_file}; put the annotations at "
                f"{self.root / 'annotations.json'} or pass the file as split_file"
            )
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
        self.coco = _load_coco(self.annotation_file)
        cat_ids = sorted(self.coco.getCatIds())
        if not cat_ids:
            raise ValueError(f"{self.annotation_file}: no categories; add a 'categories' list")
        self.cat_to_label = {cid: i + 1 for i, cid in enumerate(cat_ids)}
        names = [str(self.coco.cats[cid].get("name", cid)) for cid in cat_ids]
        super().__init__(task, ["background", *names], in_chans, transforms)
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.ids = sorted(self.coco.getImgIds())

    def __len__(self) -> int:
        return len(self.ids)

    def _annotations(self, image_id: int) -> list[dict[str, Any]]:
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id))

    def image_path(self, index: int) -> Path:
        """Where the image of item ``index`` is on disk (see the class docstring for the search order)."""
        name = self.coco.imgs[self.ids[index]]["file_name"]
        tried = [d / name for d in (self.image_dir, self.root / "images", self.root) if d is not None]
        for path in tried:
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"image {name!r} of {self.annotation_file} not found; looked at {[str(p) for p in tried]}. "
            f"Put images under {self.root / 'images'} or pass image_dir"
        )

    def _mask(self, image_id: int) -> Tensor:
        info = self.coco.imgs[image_id]
        mask = np.zeros((int(info["height"]), int(info["width"])), dtype=np.int64)
        for ann in self._annotations(image_id):
            with warnings.catch_warnings():  # pycocotools' numpy-2 copy= DeprecationWarning
                warnings.simplefilter("ignore", DeprecationWarning)
                pixels = self.coco.annToMask(ann).astype(bool)
            mask[pixels] = IGNORE_INDEX if ann.get("iscrowd", 0) else self.cat_to_label[ann["category_id"]]
        return torch.from_numpy(mask)

    def _boxes(self, image_id: int) -> dict[str, Tensor]:
        info = self.coco.imgs[image_id]
        width, height = float(info["width"]), float(info["height"])
        boxes, labels = [], []
        for ann in self._annotations(image_id):
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
            if x2 > x1 and y2 > y1:
                boxes.append([x1, y1, x2, y2])
                labels.append(self.cat_to_label[ann["category_id"]])
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image_id = self.ids[index]
        image = read_rgb(self.image_path(index), self.in_chans)
        target = self._mask(image_id) if self.task == "segment" else self._boxes(image_id)
        if self.task == "segment" and tuple(target.shape) != tuple(image.shape[1:]):
            raise ValueError(
                f"{self.image_path(index)}: image is {tuple(image.shape[1:])} but {self.annotation_file} "
                f"says height x width {tuple(target.shape)}; fix the image entry"
            )
        return self._finish(image, target)

    def _area(self, ann: dict[str, Any]) -> float:
        if self.task == "detect":
            return float(ann["bbox"][2]) * float(ann["bbox"][3])
        if "area" in ann:
            return float(ann["area"])
        from pycocotools import mask as mask_utils

        return float(mask_utils.area(self.coco.annToRLE(ann)))

    def pair_labels(self) -> np.ndarray:
        """Dominant class per image from the annotation areas (no image or mask decoding)."""
        per_image = []
        for image_id in self.ids:
            anns = [a for a in self._annotations(image_id) if not a.get("iscrowd", 0)]
            labels = np.array([self.cat_to_label[a["category_id"]] for a in anns], dtype=np.int64)
            per_image.append((labels, np.array([self._area(a) for a in anns], dtype=np.float64)))
        return per_image_dominant(per_image, self.num_classes)


def _load_coco(path: Path) -> Any:
    """pycocotools' COCO index, without its progress prints, with the file named in errors."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, AssertionError) as err:
        raise ValueError(
            f"{path}: not a valid COCO annotation file ({type(err).__name__}: {err}); it needs 'images', "
            f"'annotations' and 'categories'"
        ) from err


def _coco_split_file(root: Path, split: str) -> Path:
    candidates = [root / "annotations" / f"{split}.json", root / f"{split}.json"]
    if split == "train":
        candidates.append(root / "annotations.json")
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"coco:{root}: no annotations for split {split!r}; looked at {[str(p) for p in candidates]}. "
        f"Give each split its own file (a single annotations.json serves split 'train' only)"
    )


@register_dense_dataset("coco", prefix="coco:", pattern="coco:DIR", summary="a COCO-format folder")
def load_coco_folder(request: DenseRequest) -> DenseDataset:
    """``request.argument`` is the folder; each split reads its own annotation file (see above)."""
    root = Path(request.argument).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"coco:{root}: folder not found; give coco:DIR with an existing DIR")
    split_dir = root / "images" / request.split
    return CocoFolder(
        root,
        request.task,
        _coco_split_file(root, request.split),
        image_dir=split_dir if split_dir.is_dir() else None,
    )
