"""build_data: named datasets, honest splits, npz arrays, image folders, and error messages."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from patchswap.data import (
    DataBundle,
    DatasetNotFoundError,
    LabeledSubset,
    TensorImageDataset,
    available_datasets,
    build_data,
    collate_batch,
)

SHARED = Path("/work/shared/data")
CIFAR_PARTS = [SHARED / "cifar10-train-part1.npz", SHARED / "cifar10-train-part2.npz"]


def _hashes(images: torch.Tensor) -> Counter:
    return Counter(hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images)


def _counts(ds: object) -> np.ndarray:
    return np.bincount(np.asarray(ds.targets), minlength=10)  # type: ignore[attr-defined]


# --- registry --------------------------------------------------------------------------------------
def test_available_datasets_lists_names_and_patterns() -> None:
    names = available_datasets()
    for n in ("digits", "cifar10", "cifar100", "mnist", "fashion-mnist", "svhn", "stl10"):
        assert n in names
    assert "npz:PATH[,PATH...]" in names and "folder:PATH" in names


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        build_data("imagenet-9000")
    msg = str(info.value)
    for n in ("digits", "cifar10", "cifar100", "mnist", "fashion-mnist", "svhn", "stl10", "npz:", "folder:"):
        assert n in msg


@pytest.mark.parametrize(
    "name", ["cifar10", "cifar100", "mnist", "fashion-mnist", "svhn", "stl10", "CIFAR-10"]
)
def test_missing_torchvision_dataset_explains_download(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        build_data(name, data_dir=str(tmp_path), download=False)
    err = info.value
    assert isinstance(err, FileNotFoundError) and isinstance(err, RuntimeError)
    msg = str(err)
    assert "--download" in msg and str(tmp_path) in msg
    assert "npz:" in msg and "folder:" in msg and "copy" in msg
    assert os.listdir(tmp_path) == []  # nothing written without --download


# --- digits ----------------------------------------------------------------------------------------
def test_digits_sizes_partition_and_stratification() -> None:
    from sklearn.datasets import load_digits

    b = build_data("digits")
    assert isinstance(b, DataBundle)
    assert (len(b.train), len(b.val), len(b.test)) == (1294, 144, 359)  # 20% test, then 10% of the rest
    assert b.num_classes == 10 and b.classes == [str(i) for i in range(10)]
    assert b.in_chans == 1 and b.image_size == (8, 8) and b.in_memory and b.name == "digits"
    for ds in (b.train, b.val, b.test):
        assert isinstance(ds, TensorImageDataset)
        assert ds.images.dtype == torch.uint8 and isinstance(ds.targets, torch.Tensor)
        assert ds.targets.dtype == torch.int64
    # train + val + test is exactly the whole data set (as a multiset of images): disjoint and complete.
    raw = load_digits()
    full = torch.from_numpy(np.rint(raw.images * 255 / 16).astype(np.uint8)).unsqueeze(1)
    assert _hashes(b.train.images) + _hashes(b.val.images) + _hashes(b.test.images) == _hashes(full)
    assert int(full.max()) == 255
    # class-balanced held-out sets
    full_counts = np.bincount(raw.target)
    assert np.all(np.abs(_counts(b.test) - 359 * full_counts / 1797) <= 1)
    assert "1,294" in b.describe() and "144" in b.describe() and "359" in b.describe()
    assert "10 classes" in b.describe() and "1x8x8" in b.describe()


def test_digits_statistics_come_from_train_and_augment_settings() -> None:
    b = build_data("digits")
    x = b.train.images.double() / 255
    assert b.mean[0] == pytest.approx(float(x.mean()), abs=1e-9)
    assert b.std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-9)
    assert b.train_augment.crop_padding == 1 and not b.train_augment.flip
    assert not b.eval_augment.augments
    out = b.eval_augment(b.val.images[:4])
    torch.testing.assert_close(out, (b.val.images[:4].float() / 255 - b.mean[0]) / b.std[0])


def test_split_depends_on_split_seed_only() -> None:
    a = build_data("digits", split_seed=1)
    b = build_data("digits", split_seed=1, train_subset=300)  # a different training setup
    c = build_data("digits", split_seed=2)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.images, b.test.images)
    assert torch.equal(a.val.targets, b.val.targets)
    assert not torch.equal(a.test.images, c.test.images)
    assert len(b.train) == 300
    assert _counts(b.train).min() >= 25  # stratified subset: every class represented
    # the subset comes out of the same training pool
    assert not (_hashes(b.train.images) - _hashes(a.train.images))


def test_zero_val_and_test_splits_and_error_names() -> None:
    b = build_data("digits", val_split=0, test_split=0)
    assert b.val is None and b.test is None and len(b.train) == 1797
    assert "val none" in b.describe() and "test none" in b.describe()
    b = build_data("digits", val_split=100, test_split=0.5)
    assert len(b.test) == 899 and len(b.val) == 100
    with pytest.raises(ValueError, match="val_split"):
        build_data("digits", val_split=1.5)
    with pytest.raises(ValueError, match="train_subset"):
        build_data("digits", train_subset=5)
    with pytest.raises(ValueError, match="train_subset"):
        build_data("digits", train_subset=0)


def test_digits_image_size_resizes_once() -> None:
    b = build_data("digits", image_size=16, val_split=0)
    assert b.image_size == (16, 16) and b.train.images.shape[-2:] == (16, 16)
    assert b.train_augment.crop_padding == 2


def test_digits_loader_to_device_transform() -> None:
    b = build_data("digits")
    loader = DataLoader(b.train, batch_size=64, shuffle=True, collate_fn=collate_batch)
    images, labels = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (64, 1, 8, 8) and labels.shape == (64,)
    out = b.train_augment(images, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == (64, 1, 8, 8)


# --- npz arrays ------------------------------------------------------------------------------------
def _write_npz(
    path: Path, n_per_class: int, classes: int, seed: int, hw: tuple[int, ...], named: bool
) -> None:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.integers(0, 256, size=(len(y), *hw), dtype=np.uint8)
    arrays = {"x": x, "y": y.astype(np.int64)}
    if named:
        arrays["classes"] = np.array([f"class{i}" for i in range(classes)])
    np.savez(path, **arrays)


def test_npz_files_are_concatenated_and_test_split_carves(tmp_path: Path) -> None:
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    _write_npz(a, 20, 4, 0, (10, 10, 3), named=True)
    _write_npz(b, 10, 4, 1, (10, 10, 3), named=True)
    bundle = build_data(f"npz:{a},{b}", test_split=24, val_split=0.25, split_seed=3)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (72, 24, 24)
    assert _counts(bundle.test)[:4].tolist() == [6, 6, 6, 6]
    assert bundle.classes == [f"class{i}" for i in range(4)]
    assert bundle.in_chans == 3 and bundle.image_size == (10, 10)
    assert bundle.train_augment.crop_padding == 4 and bundle.train_augment.flip
    full = np.concatenate([np.load(a)["x"], np.load(b)["x"]])
    full_t = torch.from_numpy(full).permute(0, 3, 1, 2).contiguous()
    parts = _hashes(bundle.train.images) + _hashes(bundle.val.images) + _hashes(bundle.test.images)
    assert parts == _hashes(full_t)
    x = bundle.train.images.double() / 255
    assert bundle.mean == pytest.approx(tuple(x.mean(dim=(0, 2, 3)).tolist()), abs=1e-9)


def test_npz_grayscale_without_classes_and_bare_path(tmp_path: Path) -> None:
    p = tmp_path / "gray.npz"
    _write_npz(p, 10, 3, 0, (12, 12), named=False)
    bundle = build_data(str(p), val_split=0.2)
    assert bundle.test is None and bundle.in_chans == 1 and bundle.classes == ["0", "1", "2"]
    assert (len(bundle.train), len(bundle.val)) == (24, 6)
    assert not bundle.train_augment.flip  # grayscale arrays are treated like digits: no flips


def test_npz_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="npz file not found"):
        build_data(f"npz:{tmp_path / 'missing.npz'}")
    bad = tmp_path / "chw.npz"
    np.savez(bad, x=np.zeros((4, 3, 8, 8), np.uint8), y=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="channels-last"):
        build_data(f"npz:{bad}")
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    _write_npz(a, 2, 2, 0, (4, 4, 3), named=True)
    np.savez(b, x=np.zeros((2, 4, 4, 3), np.uint8), y=np.array([0, 1]), classes=np.array(["x", "y"]))
    with pytest.raises(ValueError, match="classes"):
        build_data(f"npz:{a},{b}")


@pytest.mark.skipif(not all(p.exists() for p in CIFAR_PARTS), reason="shared CIFAR-10 npz files not present")
def test_real_cifar10_npz_test_split_is_exactly_balanced() -> None:
    name = "npz:" + ",".join(str(p) for p in CIFAR_PARTS)
    bundle = build_data(name, test_split=10000, split_seed=0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (36000, 4000, 10000)
    assert _counts(bundle.test).tolist() == [1000] * 10
    assert _counts(bundle.val).tolist() == [400] * 10
    assert bundle.classes[:2] == ["airplane", "automobile"]
    assert bundle.image_size == (32, 32) and bundle.train_augment.crop_padding == 4
    # statistics from the training split land near the published CIFAR-10 constants
    assert bundle.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=0.01)
    # The 50,000 shared images are pairwise distinct, so 50,000 distinct hashes across the three splits
    # means they are disjoint and together cover the whole file set.
    union = _hashes(bundle.train.images) + _hashes(bundle.val.images) + _hashes(bundle.test.images)
    assert len(union) == 50000 and sum(union.values()) == 50000


# --- image folders ---------------------------------------------------------------------------------
def _make_folder(root: Path, split: str, classes: list[str], per_class: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        d = root / split / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(10, 20, size=2)
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i}.png")


def test_folder_without_val_carves_val_with_eval_transform(tmp_path: Path) -> None:
    _make_folder(tmp_path, "train", ["cat", "dog", "emu"], 8)
    b = build_data(f"folder:{tmp_path}", image_size=8, val_split=0.25, split_seed=0)
    assert not b.in_memory and b.in_chans == 3 and b.image_size == (8, 8)
    assert b.classes == ["cat", "dog", "emu"] and b.test is None
    assert isinstance(b.train, LabeledSubset) and isinstance(b.val, LabeledSubset)
    assert (len(b.train), len(b.val)) == (18, 6)
    assert b.val.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert sorted(b.train.targets.tolist()) == [0] * 6 + [1] * 6 + [2] * 6
    assert not set(b.train.indices) & set(b.val.indices)
    img, label = b.val[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 8, 8) and label == 0
    assert torch.equal(b.val[3][0], b.val[3][0])  # eval transform: deterministic
    assert b.train.dataset.train and not b.val.dataset.train
    assert "RandomResizedCrop" in repr(b.train.dataset) and "CenterCrop" in repr(b.val.dataset)
    assert not b.train_augment.augments and not b.eval_augment.augments  # crop + flip in the workers
    images, labels = next(iter(DataLoader(b.train, batch_size=5, collate_fn=collate_batch)))
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 8, 8)
    assert b.train_augment(images).dtype == torch.float32


def test_folder_with_val_and_test_dirs(tmp_path: Path) -> None:
    _make_folder(tmp_path, "train", ["a", "b", "c"], 4)
    _make_folder(tmp_path, "val", ["a", "c"], 2, seed=1)  # val lacks class b
    _make_folder(tmp_path, "test", ["a", "b", "c"], 1, seed=2)
    with pytest.warns(UserWarning, match="test_split"):
        b = build_data(str(tmp_path), image_size=8, val_split=0.5, test_split=0.2)
    assert len(b.train) == 12 and len(b.val) == 4 and len(b.test) == 3
    assert list(b.train.targets) == [0] * 4 + [1] * 4 + [2] * 4
    assert list(b.val.targets) == [0, 0, 2, 2]  # indices follow train/'s class order
    assert b.val.classes == ["a", "b", "c"]


def test_folder_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train"):
        build_data(f"folder:{tmp_path}")
    _make_folder(tmp_path, "train", ["a", "b"], 2)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match=str(tmp_path / "train" / "empty")):
        build_data(f"folder:{tmp_path}", image_size=8)
