"""Stratified, seeded train/held-out splits.

Every split in patchswap goes through :func:`stratified_split` so that

* held-out sets are class-balanced (per-class counts within one of the proportional share),
* the split depends on ``seed`` alone (a private ``numpy.random.Generator``, never a global RNG), so
  several training runs with different training seeds see exactly the same validation and test
  images -- the only honest way to compare seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from patchswap.sampling import label_array

__all__ = ["labels_to_numpy", "resolve_split_size", "stratified_split"]


def labels_to_numpy(labels: torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    """Return ``labels`` as a 1-D int64 numpy array (accepts tensors on any device, arrays, lists)."""
    return label_array(labels, allow_empty=True)


def resolve_split_size(size: float | int, n: int, *, name: str = "size") -> int:
    """Turn a fraction in (0, 1) or an absolute count into a sample count (0 means 'no split').

    Fractions are rounded half up, so ``0.1`` of 1,438 samples is 144.
    """
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a fraction in (0, 1) or an integer count, got {size!r}")
    if isinstance(size, (int, np.integer)):
        count = int(size)
        if count < 0 or count > n:
            raise ValueError(
                f"{name}={count} is out of range: give a count between 0 and {n} (the pool size)"
            )
        return count
    frac = float(size)
    if frac == 0.0:
        return 0
    if not 0.0 < frac < 1.0 or math.isnan(frac):
        raise ValueError(
            f"{name}={size!r} is out of range: give a fraction in (0, 1) or an integer count (e.g. 5000)"
        )
    count = int(math.floor(frac * n + 0.5))
    if count == 0:
        raise ValueError(
            f"{name}={size!r} of {n} samples selects no samples: use a larger fraction or an integer count"
        )
    return count


def _allocate(counts: np.ndarray, k: int, rng: np.random.Generator, name: str) -> np.ndarray:
    """Largest-remainder allocation of ``k`` samples over classes, leaving every class at least one."""
    n = int(counts.sum())
    quotas = counts * (k / n)
    alloc = np.floor(quotas).astype(np.int64)
    cap = counts - 1  # every class keeps at least one sample on the 'keep' side
    if np.any(alloc > cap):  # only possible when k == n
        bad = int(np.argmax(alloc > cap))
        raise ValueError(f"{name}={k} would leave class index {bad} with zero training samples")
    remainder = quotas - alloc
    # Order by largest fractional remainder; ties broken by a seeded random key (not by class order).
    order = np.lexsort((rng.random(len(counts)), -remainder))
    left = k - int(alloc.sum())
    while left > 0:
        progressed = False
        for j in order:
            if left == 0:
                break
            if alloc[j] < cap[j]:
                alloc[j] += 1
                left -= 1
                progressed = True
        if not progressed:
            raise ValueError(
                f"{name}={k} is too large: at most {int(cap.sum())} samples can be split off while every "
                "class keeps at least one training sample"
            )
    return alloc


def stratified_split(
    labels: torch.Tensor | np.ndarray | Sequence[int],
    size: float | int,
    seed: int,
    *,
    name: str = "size",
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..len(labels)-1`` into ``(keep_idx, split_idx)``, class-balanced and seeded.

    ``size`` is a fraction in (0, 1) or an absolute count of samples for ``split_idx``; ``0`` returns an
    empty split. Each class contributes its proportional share (largest-remainder rounding, so per-class
    counts differ by less than one from ``size * class_count / n``), and every class keeps at least one
    sample in ``keep_idx`` (for a class that small, the rounding moves to the other classes). Which
    samples are taken depends only on ``seed`` (``np.random.default_rng``), never on global RNG state.
    Both index arrays are sorted int64. ``name`` is used in error messages (e.g. ``"val_split"``).
    """
    y = labels_to_numpy(labels)
    n = int(y.shape[0])
    k = resolve_split_size(size, n, name=name)
    if k == 0:
        return np.arange(n, dtype=np.int64), np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    alloc = _allocate(counts, k, rng, name)
    # Stable sort groups indices by class in ascending index order; permute within each class.
    by_class = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    chosen = []
    for j in range(len(classes)):
        members = by_class[starts[j] : starts[j] + counts[j]]
        if alloc[j]:
            chosen.append(members[rng.permutation(counts[j])[: alloc[j]]])
    split_idx = np.sort(np.concatenate(chosen)).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[split_idx] = False
    keep_idx = np.flatnonzero(mask).astype(np.int64)
    return keep_idx, split_idx
