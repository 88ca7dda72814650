"""Named datasets and :func:`build_data`, the one entry point the engine and CLI use.

Names:

* ``digits`` -- scikit-learn's bundled 8x8 digits; needs no network and no files (the default).
* ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``, ``svhn``, ``stl10`` -- torchvision datasets
  under ``data_dir``, loaded into memory as uint8 tensors.
* ``npz:PATH[,PATH...]`` (or a bare ``*.npz`` path) -- arrays ``x`` (uint8 NHWC or NHW), ``y`` and
  optional ``classes``; several files are concatenated.
* ``folder:PATH`` (or a bare directory) -- ``PATH/train/<class>/*`` images with optional ``val/`` and
  ``test/``; decoded per item in DataLoader workers (not in memory).

All held-out sets are carved with :func:`~patchswap.data.splits.stratified_split` seeded by
``split_seed`` only, so runs with different training seeds evaluate on identical images.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from .arrays import LabeledSubset, TensorImageDataset
from .noise import LabelNoise, apply_label_noise, realised_noise_rate
from .splits import derive_seed, labels_to_numpy, stratified_split
from .transforms import DeviceAugment, folder_transform

__all__ = ["DataBundle", "DatasetNotFoundError", "available_datasets", "build_data"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_FOLDER_IMAGE_SIZE = 224
DIGITS_TEST_FRACTION = 0.2

# Seed-derivation stages: each carve-out gets its own stream derived from split_seed.
_STAGE_TEST, _STAGE_VAL, _STAGE_SUBSET = 1, 2, 3
_STAGE_NOISE_TRAIN, _STAGE_NOISE_VAL = 4, 5


class DatasetNotFoundError(FileNotFoundError, RuntimeError):
    """A named dataset's files are missing (catchable as FileNotFoundError or RuntimeError)."""


@dataclass
class DataBundle:
    """Everything training needs about a dataset: the splits, its shape, and the device transforms."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int
    classes: list[str]
    in_chans: int
    image_size: tuple[int, int]
    in_memory: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    train_augment: DeviceAugment = field(repr=False)
    eval_augment: DeviceAugment = field(repr=False)
    label_noise: str | None = None  # e.g. "symmetric:0.8" (train and val labels; test stays clean)

    def describe(self) -> str:
        """One line: split sizes, classes, image shape, storage."""

        def size(ds: Dataset | None) -> str:
            return "none" if ds is None else f"{len(ds):,}"  # type: ignore[arg-type]

        h, w = self.image_size
        where = "in memory" if self.in_memory else "decoded per item"
        text = (
            f"{self.name}: train {size(self.train)} | val {size(self.val)} | test {size(self.test)} | "
            f"{self.num_classes} classes | {self.in_chans}x{h}x{w} | {where}"
        )
        if self.label_noise:
            rates = [
                f"{split} {100 * rate:.1f}%"
                for split, ds in (("train", self.train), ("val", self.val))
                if (rate := realised_noise_rate(ds)) is not None
            ]
            text += f" | label noise {self.label_noise} (flipped: {', '.join(rates)}; test clean)"
        return text


# ---------------------------------------------------------------------------------------------------
# Loaded sources (before splitting)
# ---------------------------------------------------------------------------------------------------
@dataclass
class _MemorySource:
    train: TensorImageDataset
    test: TensorImageDataset | None
    classes: list[str]
    mean: tuple[float, ...] | None  # None: compute from the training split
    std: tuple[float, ...] | None
    crop_padding: int
    flip: bool
    default_test_split: float | int | None = None


@dataclass
class _FolderSource:
    train: Any  # ImageFolder with the training transform
    train_eval: Any  # the same samples with the eval transform (for carved val/test)
    val: Any | None
    test: Any | None
    classes: list[str]
    image_size: int


@dataclass(frozen=True)
class _TorchvisionSpec:
    loader: Callable[[str, bool], tuple[TensorImageDataset, TensorImageDataset]]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool
    files: str  # what torchvision expects under data_dir (for the error message)


def _tensor_dataset(images: Any, targets: Any, classes: Sequence[str]) -> TensorImageDataset:
    images = torch.as_tensor(images)
    return TensorImageDataset(
        images.contiguous(), torch.as_tensor(np.asarray(targets), dtype=torch.int64), classes
    )


def _load_cifar(which: str) -> Callable[[str, bool], tuple[TensorImageDataset, TensorImageDataset]]:
    def load(root: str, download: bool) -> tuple[TensorImageDataset, TensorImageDataset]:
        from torchvision import datasets

        cls = datasets.CIFAR10 if which == "cifar10" else datasets.CIFAR100
        out = []
        for train in (True, False):
            ds = cls(root, train=train, download=download)
            out.append(_tensor_dataset(torch.from_numpy(ds.data).permute(0, 3, 1, 2), ds.targets, ds.classes))
        return out[0], out[1]

    return load


def _load_mnist(which: str) -> Callable[[str, bool], tuple[TensorImageDataset, TensorImageDataset]]:
    def load(root: str, download: bool) -> tuple[TensorImageDataset, TensorImageDataset]:
        from torchvision import datasets

        cls = datasets.MNIST if which == "mnist" else datasets.FashionMNIST
        out = []
        for train in (True, False):
            ds = cls(root, train=train, download=download)
            out.append(_tensor_dataset(ds.data.unsqueeze(1), ds.targets, ds.classes))
        return out[0], out[1]

    return load


def _load_svhn(root: str, download: bool) -> tuple[TensorImageDataset, TensorImageDataset]:
    from torchvision import datasets

    out = []
    for split in ("train", "test"):
        ds = datasets.SVHN(root, split=split, download=download)
        out.append(_tensor_dataset(torch.from_numpy(ds.data), ds.labels, [str(i) for i in range(10)]))
    return out[0], out[1]


def _load_stl10(root: str, download: bool) -> tuple[TensorImageDataset, TensorImageDataset]:
    from torchvision import datasets

    out = []
    for split in ("train", "test"):
        ds = datasets.STL10(root, split=split, download=download)
        out.append(_tensor_dataset(torch.from_numpy(ds.data), ds.labels, ds.classes))
    return out[0], out[1]


_TORCHVISION: dict[str, _TorchvisionSpec] = {
    "cifar10": _TorchvisionSpec(
        _load_cifar("cifar10"),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        4,
        True,
        "cifar-10-batches-py/",
    ),
    "cifar100": _TorchvisionSpec(
        _load_cifar("cifar100"),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        4,
        True,
        "cifar-100-python/",
    ),
    "mnist": _TorchvisionSpec(_load_mnist("mnist"), (0.1307,), (0.3081,), 2, False, "MNIST/raw/"),
    "fashion-mnist": _TorchvisionSpec(
        _load_mnist("fashion-mnist"), (0.2860,), (0.3530,), 2, False, "FashionMNIST/raw/"
    ),
    "svhn": _TorchvisionSpec(
        _load_svhn,
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        4,
        False,
        "train_32x32.mat, test_32x32.mat",
    ),
    "stl10": _TorchvisionSpec(
        _load_stl10, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), 12, True, "stl10_binary/"
    ),
}

_ALIASES = {
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "cifar-100": "cifar100",
    "cifar_100": "cifar100",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "stl-10": "stl10",
    "stl_10": "stl10",
}

_PATTERNS = ("npz:PATH[,PATH...]", "folder:PATH")


def available_datasets() -> list[str]:
    """Names :func:`build_data` accepts: the built-in names, then the two path patterns."""
    return ["digits", *_TORCHVISION, *_PATTERNS]


def _missing_message(name: str, root: str, files: str) -> str:
    return (
        f"{name}: dataset files not found in {root} (torchvision expects {files} there). "
        f"Pass --download (download=True) to fetch it on a machine with internet access. Offline, copy "
        f"the files into {root} (or point --data-dir / data_dir at them), or use arrays "
        "('npz:PATH[,PATH...]' with x uint8 NHWC and y int64) or an image folder ('folder:PATH' with "
        "PATH/train/<class>/ images)."
    )


def _torchvision_source(name: str, data_dir: str | None, download: bool) -> _MemorySource:
    spec = _TORCHVISION[name]
    root = os.path.abspath(os.path.expanduser(data_dir if data_dir is not None else "./data"))
    try:
        train, test = spec.loader(root, download)
    except RuntimeError as err:
        text = str(err).lower()
        if not download and ("not found" in text or "corrupted" in text):
            raise DatasetNotFoundError(_missing_message(name, root, spec.files)) from err
        if download:
            raise DatasetNotFoundError(
                f"{name}: --download could not fetch the dataset into {root} ({err}); this machine may be "
                f"offline. " + _missing_message(name, root, spec.files)
            ) from err
        raise
    except OSError as err:  # URLError and friends when downloading offline
        if isinstance(err, DatasetNotFoundError):
            raise
        raise DatasetNotFoundError(
            f"{name}: could not read or download the dataset in {root} ({err}). "
            + _missing_message(name, root, spec.files)
        ) from err
    return _MemorySource(train, test, list(train.classes), spec.mean, spec.std, spec.crop_padding, spec.flip)


def _digits_source() -> _MemorySource:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; scale to the 0..255 range every other dataset uses.
    images = (
        np.rint(np.asarray(digits.images, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    )
    train = TensorImageDataset(
        torch.from_numpy(images).unsqueeze(1).contiguous(),
        torch.as_tensor(digits.target, dtype=torch.int64),
        [str(int(c)) for c in digits.target_names],
    )
    return _MemorySource(train, None, train.classes, None, None, 1, False, DIGITS_TEST_FRACTION)


def _npz_augment(channels: int, height: int) -> tuple[int, bool]:
    """Crop padding and flip for arrays: grayscale is treated like MNIST (no flips: digits/letters)."""
    if channels == 1:
        return (2 if height >= 16 else 1), False
    if height <= 64:
        return 4, True
    return max(1, height // 8), True


def _npz_source(paths: Sequence[str]) -> _MemorySource:
    images: list[torch.Tensor] = []
    labels: list[np.ndarray] = []
    classes: list[str] | None = None
    for raw in paths:
        path = os.path.abspath(os.path.expanduser(raw))
        if not os.path.isfile(path):
            raise DatasetNotFoundError(
                f"npz file not found: {path}. Give existing files as 'npz:PATH[,PATH...]' (arrays x uint8 "
                "NHWC or NHW, y int64, optional classes)."
            )
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            if missing:
                raise ValueError(
                    f"{path}: missing array(s) {missing}; an npz dataset needs 'x' (images) and 'y'"
                )
            x = arrays["x"]
            y = arrays["y"]
            names = [str(c) for c in arrays["classes"].tolist()] if "classes" in arrays.files else None
        if x.dtype != np.uint8:
            raise ValueError(f"{path}: x must be uint8 pixels 0..255, got {x.dtype}")
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"{path}: x must be [N, H, W, C] or [N, H, W], got shape {x.shape}")
        if x.shape[-1] not in (1, 3, 4) and x.shape[1] in (1, 3, 4):
            raise ValueError(f"{path}: x looks channels-first {x.shape}; store it channels-last [N, H, W, C]")
        y = labels_to_numpy(y)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{path}: x has {x.shape[0]} images but y has {y.shape[0]} labels")
        if names is not None:
            if classes is not None and names != classes:
                raise ValueError(f"{path}: its classes {names} differ from the other files' {classes}")
            classes = names
        if images and tuple(images[0].shape[1:]) != (x.shape[3], x.shape[1], x.shape[2]):
            raise ValueError(f"{path}: image shape {x.shape[1:]} differs from the other files")
        images.append(torch.from_numpy(x).permute(0, 3, 1, 2))
        labels.append(y)
    x_all = torch.cat(images).contiguous() if len(images) > 1 else images[0].contiguous()
    y_all = np.concatenate(labels)
    if classes is None:
        classes = [str(i) for i in range(int(y_all.max()) + 1 if y_all.size else 0)]
    train = TensorImageDataset(x_all, torch.from_numpy(y_all), classes)
    pad, flip = _npz_augment(int(x_all.shape[1]), int(x_all.shape[2]))
    return _MemorySource(train, None, classes, None, None, pad, flip)


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


def _folder_source(root: str, image_size: int | None) -> _FolderSource:
    from torchvision.datasets.vision import StandardTransform

    root = os.path.abspath(os.path.expanduser(root))
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise ValueError(
            f"image folder {root} has no train/ directory ({train_dir} is missing); expected "
            f"{root}/train/<class>/<image files> with optional val/ and test/ next to it"
        )
    classes = _class_dirs(train_dir)
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
    return _FolderSource(train, train_eval, val, test, classes, size)


# ---------------------------------------------------------------------------------------------------
# build_data
# ---------------------------------------------------------------------------------------------------
def _parse_name(name: str) -> tuple[str, list[str]]:
    """Return ``(kind, paths)`` where kind is a registry name, ``"npz"`` or ``"folder"``."""
    text = str(name).strip()
    low = text.lower()
    if low.startswith("npz:"):
        paths = [p.strip() for p in text[4:].split(",") if p.strip()]
        if not paths:
            raise ValueError("'npz:' needs at least one path: npz:PATH[,PATH...]")
        return "npz", paths
    if low.startswith("folder:"):
        path = text[len("folder:") :].strip()
        if not path:
            raise ValueError("'folder:' needs a directory: folder:PATH")
        return "folder", [path]
    key = _ALIASES.get(low, low)
    if key == "digits" or key in _TORCHVISION:
        return key, []
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts and all(p.lower().endswith(".npz") for p in parts):
        return "npz", parts
    if text and os.path.isdir(os.path.expanduser(text)):
        return "folder", [text]
    raise ValueError(
        f"unknown dataset {name!r}; valid names: {', '.join(available_datasets()[:-2])}; or the patterns "
        f"{_PATTERNS[0]} (arrays x/y/classes) and {_PATTERNS[1]} (PATH/train/<class>/ images)"
    )


def _resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 [N, C, H, W] once at load time (antialiased bilinear), chunked to bound memory."""
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].float()
        block = F.interpolate(block, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = block.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std (0..1 scale) of uint8 images from a 256-bin histogram per channel.

    A histogram is exact for uint8 and much faster than converting the whole set to float64.
    """
    c = images.shape[1]
    if images.numel() == 0:
        return (0.5,) * c, (0.5,) * c
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for ch in range(c):
        hist = torch.bincount(images[:, ch].reshape(-1), minlength=256).to(torch.float64)
        total = hist.sum()
        mean = (hist * values).sum() / total
        std = ((hist * (values - mean).square()).sum() / total).sqrt()
        means.append(float(mean))
        stds.append(float(std) if float(std) > 1e-6 else 1.0)
    return tuple(means), tuple(stds)


def _check_train_subset(train_subset: Any) -> int | None:
    if train_subset is None:
        return None
    if isinstance(train_subset, bool) or not isinstance(train_subset, (int, np.integer)) or train_subset <= 0:
        raise ValueError(f"train_subset must be a positive integer number of images, got {train_subset!r}")
    return int(train_subset)


def _carve(
    labels: np.ndarray,
    pool: np.ndarray,
    size: float | int,
    seed: int,
    name: str,
) -> tuple[np.ndarray, np.ndarray]:
    keep, split = stratified_split(labels[pool], size, seed, name=name)
    return pool[keep], pool[split]


def _subset_pool(labels: np.ndarray, pool: np.ndarray, train_subset: int, seed: int) -> np.ndarray:
    n = len(pool)
    if train_subset >= n:
        if train_subset > n:
            warnings.warn(
                f"train_subset={train_subset} exceeds the {n} training images left after the held-out "
                "splits; using all of them",
                stacklevel=3,
            )
        return pool
    k = len(np.unique(labels[pool]))
    if train_subset < k:
        raise ValueError(
            f"train_subset={train_subset} is smaller than the number of classes ({k}); every class needs at "
            "least one training image"
        )
    keep, _ = stratified_split(labels[pool], n - train_subset, seed, name="train_subset")
    return pool[keep]


def build_data(
    name: str,
    *,
    data_dir: str | None = None,
    download: bool = False,
    val_split: float | int = 0.1,
    test_split: float | int | None = None,
    split_seed: int = 0,
    train_subset: int | None = None,
    image_size: int | None = None,
    label_noise: str | None = None,
) -> DataBundle:
    """Load dataset ``name`` and return its train/val/test splits with matching device transforms.

    Split order: (1) the test set -- the dataset's own, else ``test_split`` (count or fraction) carved
    off the training pool; ``digits`` has no official test split and carves 20% when ``test_split`` is
    None; (2) the validation set -- a given ``val/`` folder, else ``val_split`` of what is left
    (0 = no validation set); (3) ``train_subset`` images kept from the rest. Every carve is stratified and
    seeded from ``split_seed`` alone, so val/test never depend on the training seed or on
    ``train_subset``. ``image_size`` resizes in-memory datasets once at load time and sets the crop size
    of image folders (default 224). npz/digits normalization statistics come from the final training
    split only.

    ``label_noise`` (``"symmetric:R"`` or ``"asymmetric:R"``, see :mod:`patchswap.data.noise`) flips
    the labels of the final train and val splits, each with its own stream seeded from ``split_seed``;
    the test split keeps its clean labels, and ``clean_targets`` keeps the originals of the noisy ones.
    """
    kind, paths = _parse_name(name)
    subset_n = _check_train_subset(train_subset)
    noise = LabelNoise.parse(label_noise)
    if kind == "folder":
        bundle = _build_folder(paths[0], val_split, test_split, split_seed, subset_n, image_size)
        return _with_label_noise(bundle, noise, split_seed)

    if kind == "digits":
        src = _digits_source()
        display = "digits"
    elif kind == "npz":
        src = _npz_source(paths)
        display = "npz:" + ",".join(paths)
    else:
        src = _torchvision_source(kind, data_dir, download)
        display = kind

    native_h = int(src.train.images.shape[2])
    if image_size is not None and (int(image_size) != native_h or src.train.images.shape[3] != native_h):
        size = int(image_size)
        if size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        src.train = TensorImageDataset(_resize_uint8(src.train.images, size), src.train.targets, src.classes)
        if src.test is not None:
            src.test = TensorImageDataset(_resize_uint8(src.test.images, size), src.test.targets, src.classes)
        src.crop_padding = max(1, round(src.crop_padding * size / native_h)) if src.crop_padding else 0

    labels = src.train.targets.numpy()
    pool = np.arange(len(src.train), dtype=np.int64)
    test: TensorImageDataset | None = src.test
    if test is not None:
        if test_split is not None:
            warnings.warn(
                f"{display} has an official test split; test_split={test_split!r} is ignored", stacklevel=2
            )
    else:
        size_test = test_split if test_split is not None else src.default_test_split
        if size_test:
            pool, test_idx = _carve(
                labels, pool, size_test, derive_seed(split_seed, _STAGE_TEST), "test_split"
            )
            test = src.train.subset(test_idx)
    val: TensorImageDataset | None = None
    if val_split:
        pool, val_idx = _carve(labels, pool, val_split, derive_seed(split_seed, _STAGE_VAL), "val_split")
        val = src.train.subset(val_idx)
    if subset_n is not None:
        pool = _subset_pool(labels, pool, subset_n, derive_seed(split_seed, _STAGE_SUBSET))
    train = src.train if len(pool) == len(src.train) else src.train.subset(pool)

    if src.mean is None or src.std is None:
        mean, std = _channel_stats(train.images)
    else:
        mean, std = tuple(src.mean), tuple(src.std)
    c, h, w = train.image_shape
    bundle = DataBundle(
        train=train,
        val=val,
        test=test,
        num_classes=len(src.classes),
        classes=list(src.classes),
        in_chans=c,
        image_size=(h, w),
        in_memory=True,
        mean=mean,
        std=std,
        name=display,
        train_augment=DeviceAugment(mean, std, crop_padding=src.crop_padding, flip=src.flip),
        eval_augment=DeviceAugment(mean, std),
    )
    return _with_label_noise(bundle, noise, split_seed)


def _with_label_noise(bundle: DataBundle, noise: LabelNoise | None, split_seed: int) -> DataBundle:
    """Noisy train and val labels (the val split is carved from the same noisy source); test stays clean."""
    if noise is None:
        return bundle
    seeds = {
        "train": derive_seed(split_seed, _STAGE_NOISE_TRAIN),
        "val": derive_seed(split_seed, _STAGE_NOISE_VAL),
    }
    for split, seed in seeds.items():
        setattr(
            bundle, split, apply_label_noise(getattr(bundle, split), noise, classes=bundle.classes, seed=seed)
        )
    bundle.label_noise = str(noise)
    return bundle


def _build_folder(
    root: str,
    val_split: float | int,
    test_split: float | int | None,
    split_seed: int,
    subset_n: int | None,
    image_size: int | None,
) -> DataBundle:
    src = _folder_source(root, image_size)
    labels = np.asarray(src.train.targets, dtype=np.int64)
    pool = np.arange(len(labels), dtype=np.int64)
    test = src.test
    if test is not None:
        if test_split is not None:
            warnings.warn(f"{root} has a test/ folder; test_split={test_split!r} is ignored", stacklevel=3)
    elif test_split:
        pool, test_idx = _carve(labels, pool, test_split, derive_seed(split_seed, _STAGE_TEST), "test_split")
        test = LabeledSubset(src.train_eval, test_idx)
    val = src.val
    if val is None and val_split:
        pool, val_idx = _carve(labels, pool, val_split, derive_seed(split_seed, _STAGE_VAL), "val_split")
        val = LabeledSubset(src.train_eval, val_idx)
    if subset_n is not None:
        pool = _subset_pool(labels, pool, subset_n, derive_seed(split_seed, _STAGE_SUBSET))
    train = src.train if len(pool) == len(labels) else LabeledSubset(src.train, pool)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    return DataBundle(
        train=train,
        val=val,
        test=test,
        num_classes=len(src.classes),
        classes=list(src.classes),
        in_chans=3,
        image_size=(src.image_size, src.image_size),
        in_memory=False,
        mean=mean,
        std=std,
        name="folder:" + os.path.abspath(os.path.expanduser(root)),
        train_augment=DeviceAugment(mean, std),
        eval_augment=DeviceAugment(mean, std),
    )
