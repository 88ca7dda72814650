"""carve_splits: one protocol (test, then val, then the training subset) for every kind of source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchswap.data import build_data, carve_splits


def _labels(counts: list[int]) -> np.ndarray:
    return np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts))


def test_test_val_subset_are_disjoint_and_stratified() -> None:
    y = _labels([40, 60, 100])
    s = carve_splits(y, split_seed=4, test_split=0.2, val_split=20, train_subset=50)
    assert (len(s.test), len(s.val), len(s.train)) == (40, 20, 50)
    parts = np.concatenate([s.train, s.val, s.test])
    assert len(np.unique(parts)) == len(parts)
    for idx in (s.test, s.val, s.train):
        assert np.all(np.diff(idx) > 0) and idx.dtype == np.int64
        share = np.bincount(y[idx], minlength=3) / len(idx)
        assert np.all(np.abs(share - np.array([0.2, 0.3, 0.5])) * len(idx) <= 1)


def test_held_out_sets_depend_on_split_seed_only() -> None:
    y = _labels([30, 30])
    a = carve_splits(y, split_seed=1, test_split=10, val_split=10)
    b = carve_splits(y, split_seed=1, test_split=10, val_split=10, train_subset=8)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
    assert set(b.train) <= set(a.train)
    c = carve_splits(y, split_seed=2, test_split=10, val_split=10)
    assert not np.array_equal(a.test, c.test)


def test_given_splits_are_not_carved() -> None:
    y = _labels([10, 10])
    with pytest.warns(UserWarning, match="test_split"):
        s = carve_splits(y, split_seed=0, test_split=4, has_test=True, has_val=True, source="mine")
    assert s.test is None and s.val is None and len(s.train) == 20
    s = carve_splits(y, split_seed=0, val_split=0, default_test_split=0.5)
    assert len(s.test) == 10 and s.val is None


def _folder(root: Path, per_class: list[int]) -> None:
    from PIL import Image

    for c, n in enumerate(per_class):
        d = root / "train" / f"c{c}"
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((4, 4, 3), 10 * c + i, np.uint8)).save(d / f"{i}.png")


def test_folder_and_memory_sources_get_the_same_indices(tmp_path: Path) -> None:
    per_class = [12, 8, 10]
    _folder(tmp_path / "f", per_class)
    y = np.repeat(np.arange(3), per_class)  # the folder's labels, in ImageFolder's (sorted) order
    x = np.zeros((len(y), 4, 4, 3), np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    options = dict(test_split=6, val_split=0.25, train_subset=12, split_seed=7)
    folder = build_data(f"folder:{tmp_path / 'f'}", image_size=4, **options)
    memory = build_data(f"npz:{tmp_path / 'a.npz'}", **options)
    expected = carve_splits(y, **options)
    for split in ("train", "val", "test"):
        assert getattr(folder, split).indices == getattr(expected, split).tolist()
        assert getattr(folder, split).targets.tolist() == y[getattr(expected, split)].tolist()
        assert getattr(memory, split).targets.tolist() == y[getattr(expected, split)].tolist()
    assert not set(folder.train.indices) & (set(folder.val.indices) | set(folder.test.indices))
