"""torchvision's classification datasets, loaded into memory as uint8 tensors.

Each is one :class:`TorchvisionSpec` with keyword fields; :func:`register_torchvision` adds it to the
registry. Files live under ``data_dir`` (default ``./data``); without ``download`` a missing dataset
fails with :class:`~patchswap.data.registry.DatasetNotFoundError` saying where the files go.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..arrays import TensorImageDataset
from ..registry import DatasetNotFoundError, DatasetRequest, register_dataset
from .base import MemorySource, tensor_dataset

__all__ = ["TORCHVISION_DATASETS", "TorchvisionSpec", "register_torchvision"]

Pair = tuple[TensorImageDataset, TensorImageDataset]
Stats = tuple[float, ...]


@dataclass(frozen=True)
class TorchvisionSpec:
    """How to load one torchvision dataset and train on it.

    ``load(root, download)`` returns ``(train, test)``; ``files`` is what torchvision expects under
    ``data_dir`` (quoted when they are missing); ``crop_padding`` and ``flip`` are the training
    augmentation; ``mean``/``std`` the published per-channel statistics.
    """

    load: Callable[[str, bool], Pair]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool
    files: str


def _train_test(
    cls_name: str, to_dataset: Callable[[Any], TensorImageDataset], *, split_arg: bool
) -> Callable[[str, bool], Pair]:
    """A loader for a torchvision class with a ``train=`` flag (or ``split=`` when ``split_arg``)."""

    def load(root: str, download: bool) -> Pair:
        from torchvision import datasets

        cls = getattr(datasets, cls_name)
        if split_arg:
            out = [to_dataset(cls(root, split=s, download=download)) for s in ("train", "test")]
        else:
            out = [to_dataset(cls(root, train=t, download=download)) for t in (True, False)]
        return out[0], out[1]

    return load


def _nhwc(ds: Any) -> TensorImageDataset:  # CIFAR: numpy NHWC
    return tensor_dataset(torch.from_numpy(ds.data).permute(0, 3, 1, 2), ds.targets, ds.classes)


def _nhw(ds: Any) -> TensorImageDataset:  # MNIST family: tensor NHW
    return tensor_dataset(ds.data.unsqueeze(1), ds.targets, ds.classes)


def _nchw(classes: Sequence[str] | None = None) -> Callable[[Any], TensorImageDataset]:
    def convert(ds: Any) -> TensorImageDataset:  # SVHN, STL-10: numpy NCHW with .labels
        return tensor_dataset(torch.from_numpy(ds.data), ds.labels, classes or ds.classes)

    return convert


TORCHVISION_DATASETS: dict[str, TorchvisionSpec] = {}


def _missing_message(name: str, root: str, files: str) -> str:
    return (
        f"{name}: dataset files not found in {root} (torchvision expects {files} there). "
        f"Pass --download (download=True) to fetch it on a machine with internet access. Offline, copy "
        f"the files into {root} (or point --data-dir / data_dir at them), or use arrays "
        "('npz:PATH[,PATH...]' with x uint8 NHWC and y int64) or an image folder ('folder:PATH' with "
        "PATH/train/<class>/ images)."
    )


def _load(name: str, spec: TorchvisionSpec, request: DatasetRequest) -> Pair:
    root = os.path.abspath(os.path.expanduser(request.data_dir if request.data_dir is not None else "./data"))
    try:
        return spec.load(root, request.download)
    except RuntimeError as err:
        text = str(err).lower()
        if not request.download and ("not found" in text or "corrupted" in text):
            raise DatasetNotFoundError(_missing_message(name, root, spec.files)) from err
        if request.download:
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


def register_torchvision(name: str, spec: TorchvisionSpec, *, aliases: Sequence[str] = ()) -> None:
    """Register ``name`` as a torchvision dataset loaded by ``spec``."""

    def loader(request: DatasetRequest) -> MemorySource:
        train, test = _load(name, spec, request)
        source = MemorySource(
            display=name,
            train=train,
            test=test,
            classes=list(train.classes),
            mean=spec.mean,
            std=spec.std,
            crop_padding=spec.crop_padding,
            flip=spec.flip,
        )
        return source.resized(request.image_size)

    TORCHVISION_DATASETS[name] = spec
    register_dataset(name, loader, aliases=aliases, summary=f"torchvision, files {spec.files}")


def _cifar_like(cls_name: str, files: str, mean: Stats, std: Stats) -> TorchvisionSpec:
    """The CIFAR sets: numpy NHWC images, 4-pixel crop padding and horizontal flips."""
    load = _train_test(cls_name, _nhwc, split_arg=False)
    return TorchvisionSpec(load=load, mean=mean, std=std, crop_padding=4, flip=True, files=files)


def _mnist_like(cls_name: str, files: str, mean: float, std: float) -> TorchvisionSpec:
    """The MNIST family: 1-channel NHW tensors, 2-pixel crop padding, no flips."""
    load = _train_test(cls_name, _nhw, split_arg=False)
    return TorchvisionSpec(load=load, mean=(mean,), std=(std,), crop_padding=2, flip=False, files=files)


_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
register_torchvision(
    "cifar10",
    _cifar_like("CIFAR10", "cifar-10-batches-py/", *_CIFAR10_STATS),
    aliases=("cifar-10", "cifar_10"),
)
register_torchvision(
    "cifar100",
    _cifar_like("CIFAR100", "cifar-100-python/", *_CIFAR100_STATS),
    aliases=("cifar-100", "cifar_100"),
)
register_torchvision("mnist", _mnist_like("MNIST", "MNIST/raw/", 0.1307, 0.3081))
register_torchvision(
    "fashion-mnist",
    _mnist_like("FashionMNIST", "FashionMNIST/raw/", 0.2860, 0.3530),
    aliases=("fashion_mnist", "fashionmnist", "fmnist"),
)
register_torchvision(
    "svhn",
    TorchvisionSpec(
        load=_train_test("SVHN", _nchw([str(i) for i in range(10)]), split_arg=True),
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970),
        crop_padding=4,
        flip=False,
        files="train_32x32.mat, test_32x32.mat",
    ),
)
register_torchvision(
    "stl10",
    TorchvisionSpec(
        load=_train_test("STL10", _nchw(), split_arg=True),
        mean=(0.4467, 0.4398, 0.4066),
        std=(0.2603, 0.2566, 0.2713),
        crop_padding=12,
        flip=True,
        files="stl10_binary/",
    ),
    aliases=("stl-10", "stl_10"),
)
