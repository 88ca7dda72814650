"""MNIST scenes: reproducible, masks and boxes agree, digits never overlap, files round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from patchswap.dense.scenes import Scenes, load_mnist_scenes, make_scenes

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
THRESHOLD = 64


def fake_digits(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Digit-like blobs: a bright rectangle whose size depends on the class, plus faint noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    digits = rng.integers(0, 30, size=(n, 28, 28, 1), dtype=np.uint8)  # below THRESHOLD: not mask
    for i, c in enumerate(labels):
        digits[i, 4 : 10 + c, 6 : 14 + c // 2, 0] = 200 + c
    return digits, labels


def assert_consistent(scenes: Scenes, threshold: int = THRESHOLD) -> None:
    """Every mask pixel sits in the one box of its label; every box is tight around its label's pixels."""
    masks = scenes.masks.numpy()
    images = scenes.images[:, 0].numpy()
    for i, (boxes, labels) in enumerate(zip(scenes.boxes, scenes.labels, strict=True)):
        assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
        assert boxes.shape == (len(labels), 4)
        painted = np.zeros_like(masks[i])
        for (x1, y1, x2, y2), label in zip(boxes.int().tolist(), labels.tolist(), strict=True):
            assert 0 <= x1 < x2 <= masks.shape[2] and 0 <= y1 < y2 <= masks.shape[1]
            assert (painted[y1:y2, x1:x2] == 0).all(), f"scene {i}: boxes overlap"
            painted[y1:y2, x1:x2] = label
            inside = masks[i, y1:y2, x1:x2] == label
            # Tight: the label's pixels touch all four sides of its box.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        fg = masks[i] > 0
        assert (masks[i][fg] == painted[fg]).all(), f"scene {i}: mask pixel outside its box"
        assert (images[i][fg] > threshold).all()


def test_same_seed_same_scenes_other_seed_differs() -> None:
    digits, labels = fake_digits()
    a = make_scenes(digits, labels, 20, seed=3)
    b = make_scenes(torch.from_numpy(digits[..., 0]), torch.from_numpy(labels), 20, seed=3)
    c = make_scenes(digits, labels, 20, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(a.labels, b.labels, strict=True))
    assert not torch.equal(a.images, c.images)


def test_shapes_classes_and_consistency() -> None:
    digits, labels = fake_digits()
    scenes = make_scenes(digits, labels, 60, canvas=48, scale=(0.8, 1.2), seed=1)
    assert len(scenes) == 60
    assert scenes.images.shape == (60, 1, 48, 48) and scenes.images.dtype == torch.uint8
    assert scenes.masks.shape == (60, 48, 48) and scenes.masks.dtype == torch.uint8
    assert scenes.classes == ["background", *(str(c) for c in range(10))]
    assert_consistent(scenes)
    # Labels are digit class + 1: all ten digits show up, background never is a box label.
    present = torch.cat(scenes.labels).unique().tolist()
    assert present == list(range(1, 11))


def test_digit_counts_in_range() -> None:
    digits, labels = fake_digits()
    counts = [len(b) for b in make_scenes(digits, labels, 150, seed=2).boxes]
    assert min(counts) >= 1 and max(counts) <= 3 and set(counts) == {1, 2, 3}
    # Small digits on a roomy canvas always find a spot: exactly the number asked for.
    roomy = make_scenes(digits, labels, 30, canvas=96, digits_per_image=(2, 2), scale=(0.8, 0.8))
    assert [len(b) for b in roomy.boxes] == [2] * 30
    assert_consistent(roomy)


def test_save_load_round_trip(tmp_path: Path) -> None:
    digits, labels = fake_digits()
    scenes = make_scenes(digits, labels, 12, digits_per_image=(0, 3), seed=5)
    assert any(len(b) == 0 for b in scenes.boxes)  # empty scenes round-trip too
    path = tmp_path / "scenes.npz"
    scenes.save(path)
    back = Scenes.load(path)
    assert torch.equal(back.images, scenes.images) and torch.equal(back.masks, scenes.masks)
    assert back.classes == scenes.classes
    for x, y in zip(back.boxes, scenes.boxes, strict=True):
        assert x.dtype == torch.float32 and torch.equal(x, y)
    for x, y in zip(back.labels, scenes.labels, strict=True):
        assert x.dtype == torch.int64 and torch.equal(x, y)
    with pytest.raises(FileNotFoundError, match="Scenes.save"):
        Scenes.load(tmp_path / "missing.npz")


def test_bad_input_errors() -> None:
    digits, labels = fake_digits()
    with pytest.raises(ValueError, match="enlarge canvas"):
        make_scenes(digits, labels, 1, canvas=32, scale=(1.0, 1.5))
    with pytest.raises(ValueError, match="uint8"):
        make_scenes(digits.astype(np.float32), labels, 1)
    with pytest.raises(ValueError, match="labels"):
        make_scenes(digits, labels[:-1], 1)
    with pytest.raises(ValueError, match="digits_per_image"):
        make_scenes(digits, labels, 1, digits_per_image=(3, 1))


def test_missing_mnist_file_names_path_and_option(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data.data_dir") as info:
        load_mnist_scenes(tmp_path, "test", 5)
    assert str(tmp_path / "mnist-test.npz") in str(info.value)
    with pytest.raises(ValueError, match="split"):
        load_mnist_scenes(tmp_path, "dev", 5)


@pytest.mark.skipif(
    not (SHARED_DATA / "mnist-train.npz").is_file(),
    reason=f"real MNIST digits not available at {SHARED_DATA / 'mnist-train.npz'}",
)
def test_real_mnist_scenes() -> None:
    train = load_mnist_scenes(SHARED_DATA, "train", 40, seed=0)
    val = load_mnist_scenes(SHARED_DATA, "val", 40, seed=1)
    assert train.images.shape == (40, 1, 64, 64)
    assert_consistent(train)
    assert_consistent(val)
    assert not torch.equal(train.images, val.images)
    counts = [len(b) for b in train.boxes]
    assert 1 <= min(counts) and max(counts) <= 3
