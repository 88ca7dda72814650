"""Label noise for noisy-label training: exact rates, seeding, the asymmetric mapping, the data path.

(These test ``patchswap.data.noise``; they live here with the rest of the robustness suite.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from patchswap.data import LabelNoise, build_data, noisy_labels, realised_noise_rate
from patchswap.data.noise import CIFAR10_CLASSES, NoisyLabelDataset, asymmetric_targets
from patchswap.engine import train
from patchswap.engine.config import load_config
from patchswap.engine.training import build_bundle


def _labels(per_class: int, k: int) -> np.ndarray:
    return np.repeat(np.arange(k), per_class)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_symmetric_flips_exactly_r_of_each_class_to_another_class(rate):
    y = _labels(97, 10)
    noisy = noisy_labels(y, f"symmetric:{rate}", num_classes=10, seed=3)
    flipped = noisy != y
    for c in range(10):
        assert flipped[y == c].sum() == int(np.floor(rate * 97 + 0.5))  # exactly, per class
    assert abs(flipped.mean() - rate) <= 0.5 / 97
    # Flipped labels land on the other classes about uniformly (never on the same class).
    if rate >= 0.5:
        counts = np.bincount(noisy[flipped], minlength=10)
        assert counts.min() > 0.6 * counts.mean()


def test_noise_is_seeded():
    y = _labels(50, 10)
    a = noisy_labels(y, "symmetric:0.4", num_classes=10, seed=0)
    assert np.array_equal(a, noisy_labels(y, "symmetric:0.4", num_classes=10, seed=0))
    assert not np.array_equal(a, noisy_labels(y, "symmetric:0.4", num_classes=10, seed=1))
    assert np.array_equal(y, _labels(50, 10))  # the input is not modified


def test_asymmetric_cifar10_mapping():
    classes = list(CIFAR10_CLASSES)
    idx = {c: i for i, c in enumerate(classes)}
    y = _labels(100, 10)
    noisy = noisy_labels(y, "asymmetric:0.4", num_classes=10, classes=classes, seed=0)
    pairs = {("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog"), ("dog", "cat")}
    for c in classes:
        moved = noisy[(y == idx[c]) & (noisy != y)]
        sources = {s for s, _ in pairs}
        if c in sources:
            (target,) = [t for s, t in pairs if s == c]
            assert len(moved) == 40 and set(moved.tolist()) == {idx[target]}
        else:
            assert len(moved) == 0
    assert (noisy != y).mean() == pytest.approx(0.2)  # 5 of 10 classes flip 40%
    # Any other class list: c -> c + 1 (mod K), every class.
    assert asymmetric_targets(["a", "b", "c"]).tolist() == [1, 2, 0]
    other = noisy_labels(_labels(10, 3), "asymmetric:0.5", num_classes=3, seed=0)
    moved = other != _labels(10, 3)
    assert np.array_equal(other[moved], (_labels(10, 3)[moved] + 1) % 3) and moved.sum() == 15


def test_parse_errors_name_the_format():
    assert LabelNoise.parse("symmetric:0.8") == LabelNoise("symmetric", 0.8)
    assert str(LabelNoise.parse(" Asymmetric:0.40 ")) == "asymmetric:0.4"
    assert LabelNoise.parse(None) is None and LabelNoise.parse("none") is None
    for bad in ("symmetric", "gaussian:0.2", "symmetric:1.5", "symmetric:x"):
        with pytest.raises(ValueError, match="label_noise"):
            LabelNoise.parse(bad)


def test_build_data_noisy_train_and_val_clean_test():
    clean = build_data("digits", split_seed=2)
    noisy = build_data("digits", split_seed=2, label_noise="symmetric:0.6")
    assert torch.equal(noisy.train.images, clean.train.images)
    assert torch.equal(noisy.train.clean_targets, clean.train.targets)
    assert torch.equal(noisy.val.clean_targets, clean.val.targets)
    assert torch.equal(noisy.test.targets, clean.test.targets) and not hasattr(noisy.test, "clean_targets")
    assert realised_noise_rate(noisy.train) == pytest.approx(0.6, abs=0.01)
    assert realised_noise_rate(noisy.val) == pytest.approx(0.6, abs=0.03)
    assert realised_noise_rate(clean.train) is None
    text = noisy.describe()
    assert "label noise symmetric:0.6" in text and "train 60." in text and "test clean" in text
    # Batches carry the noisy labels.
    batch = noisy.train.__getitems__(list(range(10)))
    assert torch.equal(batch.labels, noisy.train.targets[:10])
    with pytest.raises(ValueError, match="label_noise"):
        build_data("digits", label_noise="uniform:0.3")


def test_every_training_seed_sees_the_same_noisy_labels(tmp_path):
    def bundle(seed: str, split_seed: str = "0"):
        cfg = load_config(
            None,
            {"data.label_noise": "asymmetric:0.3", "trainer.seed": seed, "data.split_seed": split_seed},
        )
        return build_bundle(cfg)

    a, b, c = bundle("0"), bundle("7"), bundle("0", split_seed="1")
    assert torch.equal(a.train.targets, b.train.targets)
    assert not torch.equal(a.train.targets, c.train.targets)


def _make_folder(root, classes, per_class):
    rng = np.random.default_rng(0)
    for c in classes:
        d = root / "train" / c
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_image_folders_get_wrapped_with_noisy_labels(tmp_path):
    _make_folder(tmp_path, ["a", "b"], 10)
    b = build_data(f"folder:{tmp_path}", image_size=8, val_split=0.2, label_noise="symmetric:0.5")
    assert isinstance(b.train, NoisyLabelDataset)
    assert realised_noise_rate(b.train) == 0.5
    for i in range(len(b.train)):
        image, label = b.train[i]
        assert label == int(b.train.targets[i]) and tuple(image.shape) == (3, 8, 8)
    images, labels = b.train.__getitems__([0, 1, 2])  # one decoded batch, the noisy labels
    assert images.shape == (3, 3, 8, 8) and labels.tolist() == b.train.targets[:3].tolist()


def test_a_noisy_run_records_the_noise(tmp_path, tiny_overrides, single_thread):
    run_dir = tmp_path / "noisy"
    overrides = tiny_overrides(
        run_dir, data__label_noise="symmetric:0.8", trainer__epochs="1", trainer__limit_train_batches="2"
    )
    summary = train(load_config(None, overrides))
    assert "label noise symmetric:0.8" in summary["data"] and "train 80.0%" in summary["data"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["label_noise"] == "symmetric:0.8"
