"""What a training method is: options, a step that returns the loss, and one registry.

A method never imports Lightning, so it runs in a plain loop too: build it with
``create_method(name, **options)`` and call ``method(model, MethodBatch(x, y))``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = [
    "Method",
    "MethodBatch",
    "Registry",
    "StepOutput",
    "available_methods",
    "create_method",
    "method_class",
    "register_method",
]


@dataclass
class MethodBatch:
    """A training batch on the device, already augmented and normalised.

    For methods with ``needs_pairs`` the rows are laid out ``[anchors..., partners...]``.
    ``index`` holds dataset indices (for methods with per-sample memory), ``generator`` seeds the
    method's own randomness, ``epoch``/``max_epochs`` drive schedules. The engine also passes ``raw``,
    the images as loaded (before augmentation), and ``augment``, its training augmentation (raw images
    to a fresh augmented, normalised view, drawing from ``generator``), for methods that augment again
    (DLB's official form); both are ``None`` in a plain loop unless given.
    """

    x: Tensor
    y: Tensor
    index: Tensor | None = None
    generator: torch.Generator | None = None
    epoch: int = 0
    max_epochs: int = 1
    raw: Tensor | None = None
    augment: Callable[[Tensor], Tensor] | None = None


@dataclass
class StepOutput:
    """The loss to minimise, logits and targets to score training accuracy, and named parts to log."""

    loss: Tensor
    logits: Tensor | None  # None where a step has no per-sample logits (dense detection)
    targets: Tensor | None
    parts: dict[str, Tensor] = field(default_factory=dict)
    images: int | None = None  # images through the network this step, when not len(batch.x) (throughput)


class Method(nn.Module):
    """Base class. Subclasses set ``name``, an ``Options`` dataclass, and implement ``forward``.

    It is an ``nn.Module`` so state such as PS-KD's past predictions moves with ``.to(device)`` and
    is saved in checkpoints.
    """

    name: ClassVar[str] = ""
    needs_pairs: ClassVar[bool] = False

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any = None, *, num_classes: int = 0, num_samples: int = 0) -> None:
        super().__init__()
        self.options = options if options is not None else self.Options()
        self.num_classes = num_classes
        self.num_samples = num_samples

    def sampler_options(self, batch_size: int) -> dict[str, Any]:
        """Keyword arguments for ``ClassPairBatchSampler`` (pair methods only), given ``data.batch_size``;
        without ``pairs_per_batch`` the sampler makes ``batch_size`` pairs per step."""
        return {}

    def prepare_training(self) -> None:
        """Called by the engine once before training: load and check what training needs (e.g. a KD
        teacher), so a bad option fails before the first epoch, not at its first step. No-op by default."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the engine after each training epoch (e.g. to merge per-rank state); no-op by default."""

    def rank_state(self) -> Any:
        """Under DDP: what this rank's method state holds that the other ranks' do not (DLB's kept batch,
        PS-KD's predictions written so far in the epoch), as CPU tensors. Every checkpoint gathers it
        from every rank (rank 0 alone writes the method's ``state_dict``), so each rank resumes its own.
        None (the default): nothing of the method differs between ranks."""
        return None

    def load_rank_states(self, states: list[Any], rank: int, device: torch.device) -> None:
        """On resume under DDP, after the checkpoint's ``state_dict`` (rank 0's) has loaded: take this
        rank's part back (onto ``device``) from every rank's :meth:`rank_state` at the save. No-op by
        default."""

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError


class Registry:
    """Name -> method class, with the checks and error messages every kind of method shares.

    Classification methods live in one registry, dense methods (:mod:`patchswap.dense.methods`) in
    another: the same name (``ce``, ``ips``) means a different step on a different task.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Class decorator: adds a method under its ``name``."""
        if not cls.name or cls.name in self._classes:
            raise ValueError(f"{self.kind} name {cls.name!r} is empty or already registered")
        if not dataclasses.is_dataclass(cls.Options):
            raise TypeError(f"{cls.__name__}.Options must be a dataclass")
        self._classes[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type:
        if name not in self._classes:
            close = difflib.get_close_matches(name, self._classes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown {self.kind} {name!r}{hint}; valid {self.kind}s: {', '.join(self.names())}"
            )
        return self._classes[name]

    def options(self, name: str, options: dict[str, Any]) -> Any:
        """The ``Options`` of method ``name`` from keyword options; unknown options are errors."""
        cls = self.get(name)
        known = {f.name for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"{self.kind} {name!r} has no option(s) {unknown}; its options: {sorted(known)}")
        return cls.Options(**options)


_METHODS = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: adds a method under its ``name``."""
    return _METHODS.register(cls)


def available_methods() -> list[str]:
    return _METHODS.names()


def method_class(name: str) -> type[Method]:
    return _METHODS.get(name)


def create_method(name: str, *, num_classes: int = 0, num_samples: int = 0, **options: Any) -> Method:
    """Build a registered method from keyword options; unknown options are errors."""
    return method_class(name)(
        _METHODS.options(name, options), num_classes=num_classes, num_samples=num_samples
    )
