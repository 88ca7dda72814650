"""stratified_split: class balance, partition, determinism, and error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from patchswap.data import stratified_split


def _labels(counts: list[int], seed: int = 0) -> np.ndarray:
    y = np.concatenate([np.full(c, k, dtype=np.int64) for k, c in enumerate(counts)])
    return np.random.default_rng(seed).permutation(y)


def _check_partition(y: np.ndarray, keep: np.ndarray, split: np.ndarray, k: int) -> None:
    n = len(y)
    assert keep.dtype == np.int64 and split.dtype == np.int64
    assert len(split) == k
    assert np.intersect1d(keep, split).size == 0
    assert np.array_equal(np.sort(np.concatenate([keep, split])), np.arange(n))
    # Class balance: each class contributes its proportional share, within one sample.
    classes, counts = np.unique(y, return_counts=True)
    split_counts = np.array([(y[split] == c).sum() for c in classes])
    assert np.all(np.abs(split_counts - k * counts / n) <= 1.0)
    # Every class keeps at least one sample.
    assert set(np.unique(y[keep])) == set(classes)


@pytest.mark.parametrize("size,expected", [(0.2, 41), (37, 37), (0.5, 104), (1, 1)])
def test_split_is_balanced_disjoint_and_complete(size: float | int, expected: int) -> None:
    y = _labels([50, 33, 17, 100, 7])  # 207 samples, uneven classes
    keep, split = stratified_split(y, size, seed=3)
    _check_partition(y, keep, split, expected)


def test_fraction_rounds_half_up_and_matches_count() -> None:
    y = _labels([10] * 10)
    _, a = stratified_split(y, 0.25, seed=1)
    _, b = stratified_split(y, 25, seed=1)
    assert len(a) == 25
    assert np.array_equal(a, b)


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    y = _labels([40, 60, 80])
    k1, s1 = stratified_split(y, 0.3, seed=7)
    k2, s2 = stratified_split(y, 0.3, seed=7)
    assert np.array_equal(s1, s2) and np.array_equal(k1, k2)
    _, s3 = stratified_split(y, 0.3, seed=8)
    assert not np.array_equal(s1, s3)


def test_independent_of_global_rng() -> None:
    y = _labels([40, 60, 80])
    np.random.seed(0)
    torch.manual_seed(0)
    _, a = stratified_split(y, 0.3, seed=5)
    np.random.seed(123)
    torch.manual_seed(999)
    np.random.rand(10)
    torch.rand(10)
    _, b = stratified_split(y, 0.3, seed=5)
    assert np.array_equal(a, b)


def test_accepts_tensor_list_and_array() -> None:
    y = _labels([20, 30])
    _, a = stratified_split(y, 10, seed=0)
    _, b = stratified_split(torch.from_numpy(y), 10, seed=0)
    _, c = stratified_split(y.tolist(), 10, seed=0)
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_zero_size_gives_empty_split() -> None:
    y = _labels([5, 5])
    keep, split = stratified_split(y, 0, seed=0)
    assert split.size == 0 and np.array_equal(keep, np.arange(10))


def test_singleton_class_stays_in_training_side() -> None:
    y = np.array([0] * 9 + [1], dtype=np.int64)
    for seed in range(20):
        keep, split = stratified_split(y, 0.5, seed=seed)
        assert 9 in keep
        assert len(split) == 5


@pytest.mark.parametrize("size", [1.5, -0.1, -1, 11, 1.0, True, "0.1", float("nan")])
def test_out_of_range_size_names_the_argument(size: object) -> None:
    y = _labels([5, 5])
    with pytest.raises(ValueError, match="val_split"):
        stratified_split(y, size, seed=0, name="val_split")  # type: ignore[arg-type]


def test_fraction_selecting_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="selects no samples"):
        stratified_split(_labels([2, 2]), 0.05, seed=0)


def test_class_left_without_training_samples_is_an_error() -> None:
    y = np.array([0, 0, 0, 1], dtype=np.int64)
    with pytest.raises(ValueError, match="test_split.*class"):
        stratified_split(y, 3, seed=0, name="test_split")
    with pytest.raises(ValueError, match="zero training samples"):
        stratified_split(y, 4, seed=0, name="test_split")


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8),
    frac=st.floats(min_value=0.01, max_value=0.9),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_property_partition_and_balance(counts: list[int], frac: float, seed: int) -> None:
    y = _labels(counts, seed=seed % 97)
    n, n_cls = len(y), len(counts)
    k = int(np.floor(frac * n + 0.5))
    if k == 0 or k > n - n_cls:
        with pytest.raises(ValueError):
            stratified_split(y, frac, seed=seed)
        return
    keep, split = stratified_split(y, frac, seed=seed)
    assert len(split) == k
    assert np.intersect1d(keep, split).size == 0
    assert len(keep) + len(split) == n
    assert set(np.unique(y[keep])) == set(np.unique(y))
    classes, cls_counts = np.unique(y, return_counts=True)
    split_counts = np.array([(y[split] == c).sum() for c in classes])
    quotas = k * cls_counts / n
    if np.all(np.ceil(quotas) <= cls_counts - 1):
        # No class is so small that keeping one training sample distorts the allocation.
        assert np.all(np.abs(split_counts - quotas) < 1.0)
    assert np.all(split_counts <= cls_counts - 1)
