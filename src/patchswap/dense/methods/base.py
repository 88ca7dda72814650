"""What a dense training method is: options, a step that returns the loss, and one registry.

The classification contract (:mod:`patchswap.methods.base`) on segmentation and detection batches:
a method is one file, a registered class with an ``Options`` dataclass (the transfer config's
section of the same name, its flags and ``--help``), and ``forward(model, batch) -> StepOutput``.
Lightning-free: build one with ``create_dense_method(name, **options)`` and call it in any loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from patchswap.methods.base import Registry, StepOutput

__all__ = [
    "IGNORE_INDEX",
    "TASKS",
    "DenseBatch",
    "DenseMethod",
    "available_dense_methods",
    "create_dense_method",
    "dense_method_class",
    "pair_count",
    "register_dense_method",
]

IGNORE_INDEX = 255  # segmentation pixels that are not scored (VOC's object borders, padding)
TASKS = ("segment", "detect")


@dataclass
class DenseBatch:
    """A training batch on the device, already flipped, pixels as floats in [0, 1].

    ``segment``: ``images`` ``[B, C, H, W]``, ``targets`` int64 masks ``[B, H, W]`` (``IGNORE_INDEX``
    is not scored). ``detect``: ``images`` a list of ``[C, H, W]``, ``targets`` a list of
    ``{"boxes", "labels"}``. For methods with ``needs_pairs`` the rows are ``[anchors..., partners...]``.
    ``generator`` seeds the method's own randomness (the swaps), so a seeded run repeats exactly.
    """

    task: str
    images: Any
    targets: Any
    generator: torch.Generator | None = None
    epoch: int = 0
    max_epochs: int = 1


class DenseMethod(nn.Module):
    """Base class. Subclasses set ``name``, an ``Options`` dataclass, and implement one step per task.

    ``segment`` returns the loss with the logits of the images as given and their masks (for
    training scores); ``detect`` returns the detector's summed losses (no per-image logits).
    ``StepOutput.images`` counts the images through the network (throughput).
    """

    name: ClassVar[str] = ""
    needs_pairs: ClassVar[bool] = False  # batches from the same-class pair sampler

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any = None) -> None:
        super().__init__()
        self.options = options if options is not None else self.Options()

    def forward(self, model: nn.Module, batch: DenseBatch) -> StepOutput:
        if batch.task == "segment":
            return self.segment(model, batch.images, batch.targets, batch.generator)
        if batch.task == "detect":
            return self.detect(model, batch.images, batch.targets, batch.generator)
        raise ValueError(f"unknown dense task {batch.task!r}: use one of {', '.join(TASKS)}")

    def segment(
        self, model: nn.Module, images: Tensor, masks: Tensor, generator: torch.Generator | None
    ) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError(f"dense method {self.name!r} does not support segmentation")

    def detect(
        self, model: nn.Module, images: list[Tensor], targets: list[dict], generator: torch.Generator | None
    ) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError(f"dense method {self.name!r} does not support detection")


def pair_count(name: str, count: int) -> int:
    """Pairs in a ``[anchors..., partners...]`` batch of ``count`` images."""
    if count % 2:
        raise ValueError(
            f"dense {name} needs batches laid out [anchors..., partners...] (an even batch from the "
            f"pair sampler), got {count} images"
        )
    return count // 2


_DENSE_METHODS = Registry("dense method")


def register_dense_method(cls: type[DenseMethod]) -> type[DenseMethod]:
    """Class decorator: adds a dense method under its ``name``."""
    return _DENSE_METHODS.register(cls)


def available_dense_methods() -> list[str]:
    return _DENSE_METHODS.names()


def dense_method_class(name: str) -> type[DenseMethod]:
    return _DENSE_METHODS.get(name)


def create_dense_method(name: str, **options: Any) -> DenseMethod:
    """Build a registered dense method from keyword options; unknown options are errors."""
    return dense_method_class(name)(_DENSE_METHODS.options(name, options))
