"""The split protocol, once: carve test, then val, then the training subset, from one pool of labels.

In-memory arrays and image folders both go through :func:`carve_splits`, so a dataset's held-out sets
depend only on its labels and ``split_seed`` -- never on the training seed, ``train_subset`` or where
the images are stored. Every carve is stratified (:func:`~patchswap.data.splits.stratified_split`)
and draws from its own seed stream.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from ..seeding import SPLIT_BITS, derive_seed
from .splits import stratified_split

__all__ = ["SplitIndices", "carve_splits"]

# Seed-derivation stages: each carve-out gets its own stream derived from split_seed.
STAGE_TEST, STAGE_VAL, STAGE_SUBSET = 1, 2, 3


class SplitIndices(NamedTuple):
    """Sorted int64 indices into the source's training pool; ``None`` where nothing was carved (the
    source has its own split, or the split size is 0)."""

    train: np.ndarray
    val: np.ndarray | None
    test: np.ndarray | None


def _carve(
    labels: np.ndarray, pool: np.ndarray, size: float | int, seed: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(pool left, pool carved)``: a stratified carve of ``size`` out of ``pool``."""
    keep, split = stratified_split(labels[pool], size, seed, name=name)
    return pool[keep], pool[split]


def _subset_pool(labels: np.ndarray, pool: np.ndarray, train_subset: int, seed: int) -> np.ndarray:
    n = len(pool)
    if train_subset >= n:
        if train_subset > n:
            warnings.warn(
                f"train_subset={train_subset} exceeds the {n} training images left after the held-out "
                "splits; using all of them",
                stacklevel=4,
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


def carve_splits(
    labels: np.ndarray,
    *,
    split_seed: int,
    val_split: float | int = 0.1,
    test_split: float | int | None = None,
    train_subset: int | None = None,
    has_test: bool = False,
    has_val: bool = False,
    default_test_split: float | int | None = None,
    source: str = "the dataset",
) -> SplitIndices:
    """Carve ``labels``' pool: (1) test, (2) val, (3) ``train_subset`` images kept from the rest.

    (1) A source with its own test set (``has_test``) carves none and warns if ``test_split`` was given;
    otherwise ``test_split`` (or the source's ``default_test_split`` when None) is carved. (2) A source
    with its own val set carves none; otherwise ``val_split`` (0 = no val). (3) ``train_subset`` keeps a
    stratified subset. Sizes are fractions or counts; ``source`` names the dataset in warnings.
    """
    labels = np.asarray(labels, dtype=np.int64)
    pool = np.arange(len(labels), dtype=np.int64)
    test_idx = val_idx = None
    if has_test:
        if test_split is not None:
            warnings.warn(
                f"{source} has its own test split; test_split={test_split!r} is ignored", stacklevel=3
            )
    else:
        size = test_split if test_split is not None else default_test_split
        if size:
            pool, test_idx = _carve(
                labels, pool, size, derive_seed(split_seed, STAGE_TEST, bits=SPLIT_BITS), "test_split"
            )
    if not has_val and val_split:
        pool, val_idx = _carve(
            labels, pool, val_split, derive_seed(split_seed, STAGE_VAL, bits=SPLIT_BITS), "val_split"
        )
    if train_subset is not None:
        pool = _subset_pool(
            labels, pool, train_subset, derive_seed(split_seed, STAGE_SUBSET, bits=SPLIT_BITS)
        )
    return SplitIndices(pool, val_idx, test_idx)
