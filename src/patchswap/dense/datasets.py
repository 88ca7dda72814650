"""One dataset interface for segmentation and detection, and :func:`build_dense_dataset`.

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

Names for :func:`build_dense_dataset`: ``scenes`` (MNIST digits pasted on a canvas, offline; see
:mod:`patchswap.dense.scenes`), ``voc`` / ``voc2012`` and ``voc2007`` (torchvision's Pascal VOC under
``data_dir/VOCdevkit``), and ``coco:DIR`` (a COCO-format folder, see :class:`CocoFolder`).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data.registry import DatasetNotFoundError
from ..data.splits import derive_seed
from .scenes import Scenes, load_mnist_scenes

__all__ = [
    "IGNORE_INDEX",
    "TASKS",
    "VOC_CLASSES",
    "CocoFolder",
    "DenseDataset",
    "SceneDetection",
    "SceneSegmentation",
    "VOCDetection",
    "VOCSegmentation",
    "available_dense_datasets",
    "build_dense_dataset",
    "collate_dense",
    "dominant_box_classes",
    "dominant_mask_classes",
]

TASKS = ("segment", "detect")
SPLITS = ("train", "val", "test")
IGNORE_INDEX = 255
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
DEFAULT_SCENE_COUNTS = {"train": 4000, "val": 1000, "test": 1000}
# Seed-derivation stages for the scene splits (train uses the seed itself).
_STAGE_SCENES_VAL, _STAGE_SCENES_TEST = 11, 12
# Masks per bincount chunk in dominant_mask_classes: bounds the int64 copy to ~32 MiB at 64x64.
_MASK_CHUNK = 1024

Target = Any  # mask Tensor (segment) or {"boxes", "labels"} dict (detect)
Transforms = Callable[[Tensor, Target], tuple[Tensor, Target]]


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return task


# ---------------------------------------------------------------------------------------------------
# Pair labels from annotations
# ---------------------------------------------------------------------------------------------------
def _dominant(weights: np.ndarray) -> np.ndarray:
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
        out[start : start + n] = _dominant(counts)
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
    return _dominant(totals.reshape(num_images, num_classes))


def _per_image_dominant(areas: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int) -> np.ndarray:
    """``[(labels, areas) per image]`` -> dominant class per image (for sources parsed one by one)."""
    counts = np.array([len(lab) for lab, _ in areas], dtype=np.int64)
    labels = np.concatenate([lab for lab, _ in areas]) if areas else np.zeros(0, np.int64)
    weights = np.concatenate([w for _, w in areas]) if areas else np.zeros(0)
    slot = np.repeat(np.arange(len(areas)), counts) * num_classes + labels.astype(np.int64)
    totals = np.bincount(slot, weights=weights, minlength=len(areas) * num_classes)
    return _dominant(totals.reshape(len(areas), num_classes))


# ---------------------------------------------------------------------------------------------------
# Base class and scenes
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
        self.task = _check_task(task)
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


# ---------------------------------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------------------------------
def _read_rgb(path: str | Path, in_chans: int = 3) -> Tensor:
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB" if in_chans == 3 else "L"))
    tensor = torch.from_numpy(array.copy())
    return tensor.permute(2, 0, 1).contiguous() if tensor.ndim == 3 else tensor.unsqueeze(0)


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


class VOCSegmentation(DenseDataset):
    """Pascal VOC semantic segmentation: 20 classes + background; the 255 border stays ignore.

    ``pair_labels`` reads every mask PNG once (never the JPEGs) and caches the result in memory and in
    ``VOCdevkit/VOC<year>/patchswap-pair-labels-<image_set>.npy`` (skipped if the folder is read-only).
    """

    def __init__(
        self,
        root: str | Path,
        year: str = "2012",
        image_set: str = "train",
        download: bool = False,
        transforms: Transforms | None = None,
    ) -> None:
        super().__init__("segment", ["background", *VOC_CLASSES], 3, transforms)
        self.voc = _open_voc("VOCSegmentation", root, year, image_set, download)
        self._pair_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.voc.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = _read_rgb(self.voc.images[index])
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
        self._pair_labels = _dominant(counts[:, : self.num_classes])
        if cache is not None:
            with contextlib.suppress(OSError):
                np.save(cache, self._pair_labels)
        return self._pair_labels


class VOCDetection(DenseDataset):
    """Pascal VOC detection: XML boxes (1-based, inclusive) to 0-based xyxy pixels, 20 classes.

    Objects marked ``difficult`` are dropped unless ``keep_difficult``. ``pair_labels`` parses the XML
    files once (no image decoding) and keeps the result in memory.
    """

    def __init__(
        self,
        root: str | Path,
        year: str = "2012",
        image_set: str = "train",
        download: bool = False,
        keep_difficult: bool = False,
        transforms: Transforms | None = None,
    ) -> None:
        super().__init__("detect", ["background", *VOC_CLASSES], 3, transforms)
        self.voc = _open_voc("VOCDetection", root, year, image_set, download)
        self.keep_difficult = keep_difficult
        self._pair_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.voc.images)

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
        return self._finish(_read_rgb(self.voc.images[index]), self.parse_annotation(index))

    def pair_labels(self) -> np.ndarray:
        """Dominant class per image by total box area, from the XML files only (cached in memory)."""
        if self._pair_labels is None:
            per_image = []
            for i in range(len(self)):
                target = self.parse_annotation(i)
                b = target["boxes"].numpy().astype(np.float64)
                per_image.append((target["labels"].numpy(), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            self._pair_labels = _per_image_dominant(per_image, self.num_classes)
        return self._pair_labels


# ---------------------------------------------------------------------------------------------------
# COCO-format folders
# ---------------------------------------------------------------------------------------------------
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
        image = _read_rgb(self.image_path(index), self.in_chans)
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
        return _per_image_dominant(per_image, self.num_classes)


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


# ---------------------------------------------------------------------------------------------------
# build_dense_dataset and collate
# ---------------------------------------------------------------------------------------------------
def available_dense_datasets() -> list[str]:
    """Names :func:`build_dense_dataset` accepts."""
    return ["scenes", "voc", "voc2012", "voc2007", "coco:DIR"]


def _scenes(task: str, split: str, data_dir: str, count: int | None, canvas: int, seed: int) -> DenseDataset:
    stage_seed = {
        "train": seed,
        "val": derive_seed(seed, _STAGE_SCENES_VAL),
        "test": derive_seed(seed, _STAGE_SCENES_TEST),
    }[split]
    n = DEFAULT_SCENE_COUNTS[split] if count is None else int(count)
    scenes = load_mnist_scenes(data_dir, split, n, canvas=canvas, seed=stage_seed)
    return SceneSegmentation(scenes) if task == "segment" else SceneDetection(scenes)


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


def build_dense_dataset(
    name: str,
    task: str,
    split: str,
    *,
    data_dir: str = "../shared/data",
    download: bool = False,
    scene_count: int | None = None,
    canvas: int = 64,
    seed: int = 0,
) -> DenseDataset:
    """The ``split`` ("train", "val" or "test") of a named dense dataset for ``task``.

    ``seed`` only lays out scenes: keep it fixed across training seeds so every run sees identical data.
    Scenes: train/val from disjoint MNIST training digits, test from MNIST test digits; ``scene_count``
    overrides the default sizes (train 4000, val 1000, test 1000). VOC2012 has no public test split.
    """
    _check_task(task)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    key = name.strip()
    lowered = key.lower()
    if lowered == "scenes":
        return _scenes(task, split, data_dir, scene_count, canvas, seed)
    if lowered in ("voc", "voc2012", "voc2007"):
        year = "2007" if lowered == "voc2007" else "2012"
        cls = VOCSegmentation if task == "segment" else VOCDetection
        return cls(data_dir, year=year, image_set=split, download=download)
    if lowered.startswith("coco:"):
        root = Path(key[len("coco:") :]).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"coco:{root}: folder not found; give coco:DIR with an existing DIR")
        split_dir = root / "images" / split
        return CocoFolder(
            root,
            task,
            _coco_split_file(root, split),
            image_dir=split_dir if split_dir.is_dir() else None,
        )
    raise ValueError(f"unknown dense dataset {name!r}; valid names: {', '.join(available_dense_datasets())}")


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
    return _collate_segment if _check_task(task) == "segment" else _collate_detect
