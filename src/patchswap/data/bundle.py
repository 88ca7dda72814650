"""The :class:`DataBundle`: what :func:`~patchswap.data.build_data` hands the engine."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import Dataset

from .noise import realised_noise_rate
from .transforms import DeviceAugment

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DataBundle"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        where = "in memory" if self.in_memory else "decoded in loader workers"
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
