"""Synthetic label noise for training splits: ``symmetric:R`` and ``asymmetric:R``, seeded and exact.

* ``symmetric:R`` -- in every class ``c``, exactly ``round(R * n_c)`` samples (chosen uniformly) get a
  label drawn uniformly from the *other* ``K - 1`` classes. A flipped label never stays the same, so
  R is the realised noise rate (up to the per-class rounding). Papers that redraw the label from all
  ``K`` classes (DivideMix-style "uniform" noise) correspond to ``symmetric:R*(K-1)/K`` here.
* ``asymmetric:R`` -- class-dependent flips (Patrini et al. 2017): exactly ``round(R * n_c)`` samples of
  each source class ``c`` take the label ``target(c)``. For CIFAR-10 (recognised by its class names):
  truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog (the other five classes stay clean,
  so the overall rate is about R / 2). For any other dataset every class flips to the next class,
  cyclically: ``c -> (c + 1) mod K``.

Noise depends only on (labels, spec, seed): the data pipeline seeds it from ``split_seed``, so every
training seed sees the same noisy labels. The clean labels stay available as ``clean_targets``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .arrays import ImageBatch, TensorImageDataset
from .splits import labels_to_numpy

__all__ = [
    "CIFAR10_ASYMMETRIC",
    "LabelNoise",
    "NoisyLabelDataset",
    "apply_label_noise",
    "asymmetric_targets",
    "noisy_labels",
    "realised_noise_rate",
]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# Patrini et al. (2017), "Making deep neural networks robust to label noise: a loss correction approach".
CIFAR10_ASYMMETRIC = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
KINDS = ("symmetric", "asymmetric")


@dataclass(frozen=True)
class LabelNoise:
    """A parsed noise spec: ``kind`` (symmetric | asymmetric) and ``rate`` in [0, 1]."""

    kind: str
    rate: float

    @classmethod
    def parse(cls, text: str | LabelNoise | None) -> LabelNoise | None:
        """``"symmetric:0.8"`` -> LabelNoise; None, ``""`` and ``"none"`` -> None; errors name the format."""
        if text is None or isinstance(text, LabelNoise):
            return text
        raw = str(text).strip()
        if raw.lower() in ("", "none", "null", "clean"):
            return None
        kind, sep, rate_text = raw.partition(":")
        kind = kind.strip().lower()
        if not sep or kind not in KINDS:
            raise ValueError(
                f"label_noise={text!r}: expected 'symmetric:R' or 'asymmetric:R' with R in [0, 1], "
                "e.g. symmetric:0.8"
            )
        try:
            rate = float(rate_text)
        except ValueError:
            raise ValueError(f"label_noise={text!r}: the rate {rate_text!r} is not a number") from None
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"label_noise={text!r}: the rate must be in [0, 1], got {rate}")
        return cls(kind, rate)

    def __str__(self) -> str:
        return f"{self.kind}:{self.rate:g}"


def asymmetric_targets(classes: Sequence[str]) -> np.ndarray:
    """Target class of every class under asymmetric noise (-1: never flipped)."""
    k = len(classes)
    names = [str(c).lower() for c in classes]
    if sorted(names) == sorted(CIFAR10_CLASSES):
        index = {n: i for i, n in enumerate(names)}
        out = np.full(k, -1, dtype=np.int64)
        for src, dst in CIFAR10_ASYMMETRIC.items():
            out[index[src]] = index[dst]
        return out
    return (np.arange(k, dtype=np.int64) + 1) % k


def noisy_labels(
    labels: Any, spec: LabelNoise | str, *, num_classes: int, classes: Sequence[str] | None = None, seed: int
) -> np.ndarray:
    """Noisy copy of ``labels`` (1-D ints): exactly ``round(R * n_c)`` flips per source class, seeded."""
    noise = LabelNoise.parse(spec) if not isinstance(spec, LabelNoise) else spec
    y = labels_to_numpy(labels)
    out = y.copy()
    if noise is None or noise.rate == 0.0 or y.size == 0:
        return out
    if num_classes < 2:
        raise ValueError("label noise needs at least two classes")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    targets = asymmetric_targets(names) if noise.kind == "asymmetric" else None
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    for c in range(num_classes):  # fixed class order: the draws depend on the labels and the seed only
        members = np.flatnonzero(y == c)
        if members.size == 0 or (targets is not None and targets[c] < 0):
            continue
        k = int(np.floor(noise.rate * members.size + 0.5))
        chosen = np.sort(rng.permutation(members)[:k])
        if targets is not None:
            out[chosen] = targets[c]
        else:  # a uniformly random *other* class: c + {1..K-1} mod K
            out[chosen] = (c + rng.integers(1, num_classes, size=k)) % num_classes
    return out


def realised_noise_rate(dataset: Any) -> float | None:
    """Fraction of labels that differ from ``clean_targets`` (None when the dataset carries no noise)."""
    clean = getattr(dataset, "clean_targets", None)
    if clean is None:
        return None
    noisy = labels_to_numpy(dataset.targets)
    clean = labels_to_numpy(clean)
    return float((noisy != clean).mean()) if noisy.size else 0.0


class NoisyLabelDataset(Dataset):
    """Any labelled dataset with its labels replaced (image folders, subsets); images pass through.

    ``targets`` holds the noisy labels, ``clean_targets`` the originals, ``classes`` the class names.
    """

    def __init__(self, dataset: Dataset, targets: np.ndarray, clean_targets: np.ndarray) -> None:
        self.dataset = dataset
        self.targets = torch.as_tensor(targets, dtype=torch.int64)
        self.clean_targets = torch.as_tensor(clean_targets, dtype=torch.int64)
        self.classes = list(getattr(dataset, "classes", []))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, _ = self.dataset[index]
        return image, int(self.targets[index])

    def __getitems__(self, indices: Sequence[int]) -> Any:
        getitems = getattr(self.dataset, "__getitems__", None)
        labels = self.targets[torch.as_tensor(list(indices), dtype=torch.long)]
        if getitems is None:
            return [(self.dataset[i][0], int(t)) for i, t in zip(indices, labels.tolist(), strict=True)]
        batch = getitems(indices)
        if isinstance(batch, ImageBatch) or (isinstance(batch, tuple) and len(batch) == 2):
            return ImageBatch(batch[0], labels.to(batch[1].device))
        return [(item[0], int(t)) for item, t in zip(batch, labels.tolist(), strict=True)]


def apply_label_noise(
    dataset: Dataset | None, spec: LabelNoise | str | None, *, classes: Sequence[str], seed: int
) -> Dataset | None:
    """``dataset`` with noisy ``targets`` and the originals as ``clean_targets`` (None/clean: unchanged).

    In-memory data stays a :class:`TensorImageDataset` sharing the image tensor (only labels are new);
    any other dataset is wrapped in :class:`NoisyLabelDataset`.
    """
    noise = LabelNoise.parse(spec)
    if dataset is None or noise is None:
        return dataset
    clean = labels_to_numpy(dataset.targets)  # type: ignore[attr-defined]
    noisy = noisy_labels(clean, noise, num_classes=len(classes), classes=classes, seed=seed)
    if isinstance(dataset, TensorImageDataset):
        out = TensorImageDataset(dataset.images, torch.from_numpy(noisy), dataset.classes)
        out.clean_targets = torch.from_numpy(clean)  # type: ignore[attr-defined]
        return out
    return NoisyLabelDataset(dataset, noisy, clean)
