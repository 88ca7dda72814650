"""TensorImageDataset, LabeledSubset and collate_batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from patchswap.data import ImageBatch, LabeledSubset, TensorImageDataset, collate_batch


def _dataset(n: int = 20, c: int = 3, h: int = 5, w: int = 6, classes: int = 4) -> TensorImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    targets = torch.arange(n) % classes
    return TensorImageDataset(images, targets, [f"c{i}" for i in range(classes)])


def test_getitem_returns_uint8_image_and_int_label() -> None:
    ds = _dataset()
    img, label = ds[7]
    assert img.dtype == torch.uint8 and img.shape == (3, 5, 6)
    assert isinstance(label, int) and label == 7 % 4
    assert torch.equal(img, ds.images[7])
    assert len(ds) == 20 and ds.num_classes == 4 and ds.image_shape == (3, 5, 6)


def test_getitems_matches_per_item_getitem() -> None:
    ds = _dataset()
    idx = [3, 0, 19, 3, 11]
    batch = ds.__getitems__(idx)
    assert isinstance(batch, ImageBatch)
    ref_images = torch.stack([ds[i][0] for i in idx])
    ref_labels = torch.tensor([ds[i][1] for i in idx])
    assert torch.equal(batch.images, ref_images)
    assert torch.equal(batch.labels, ref_labels)
    assert batch.labels.dtype == torch.int64


def test_dataloader_uses_batched_path_and_covers_every_item_once() -> None:
    ds = _dataset(n=23)
    loader = DataLoader(
        ds, batch_size=5, shuffle=True, collate_fn=collate_batch, generator=torch.Generator().manual_seed(1)
    )
    seen_labels, seen_images = [], []
    for images, labels in loader:
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[0] == labels.shape[0]
        seen_images.append(images)
        seen_labels.append(labels)
    images = torch.cat(seen_images)
    assert images.shape[0] == 23
    # Same multiset of images as the dataset (each exactly once).
    key = lambda t: sorted(bytes(x.numpy().tobytes()) for x in t)
    assert key(images) == key(ds.images)
    assert torch.cat(seen_labels).bincount().tolist() == ds.targets.bincount().tolist()


def test_dataloader_over_torch_subset_still_batches() -> None:
    ds = _dataset()
    sub = Subset(ds, [1, 2, 3, 4, 5, 6])
    images, labels = next(iter(DataLoader(sub, batch_size=4, collate_fn=collate_batch)))
    assert torch.equal(images, ds.images[1:5]) and torch.equal(labels, ds.targets[1:5])


def test_collate_batch_falls_back_to_default_collate() -> None:
    samples = [(torch.zeros(1, 2, 2, dtype=torch.uint8), 1), (torch.ones(1, 2, 2, dtype=torch.uint8), 0)]
    images, labels = collate_batch(samples)
    assert images.shape == (2, 1, 2, 2) and labels.tolist() == [1, 0]
    raw = (torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2]))
    passed = collate_batch(raw)
    assert passed.images is raw[0] and passed.labels is raw[1]


def test_subset_and_to_keep_values_and_classes() -> None:
    ds = _dataset()
    sub = ds.subset(np.array([5, 2, 9]))
    assert isinstance(sub, TensorImageDataset)
    assert torch.equal(sub.images, ds.images[[5, 2, 9]]) and sub.targets.tolist() == [1, 2, 1]
    assert sub.classes == ds.classes
    moved = ds.to("cpu")
    assert moved is not ds and moved.device == torch.device("cpu")
    assert torch.equal(moved.images, ds.images) and torch.equal(moved.targets, ds.targets)


def test_numpy_inputs_are_accepted() -> None:
    ds = TensorImageDataset(np.zeros((2, 1, 3, 3), np.uint8), np.array([0, 1], np.int32), ["a", "b"])
    assert ds.targets.dtype == torch.int64 and ds.images.dtype == torch.uint8


@pytest.mark.parametrize(
    "images,targets,match",
    [
        (torch.zeros(2, 1, 3, 3), torch.tensor([0, 1]), "uint8"),
        (torch.zeros(2, 3, 3, dtype=torch.uint8), torch.tensor([0, 1]), r"4-D.*unsqueeze"),
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([[0, 1]]), "1-D"),
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([0, 1, 1]), "same length"),
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([0, -1]), "non-negative"),
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([0, 2]), "class names"),
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([0.0, 1.0]), "integer"),
    ],
)
def test_constructor_validation_says_what_to_change(
    images: torch.Tensor, targets: torch.Tensor, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        TensorImageDataset(images, targets, ["a", "b"])


def test_labeled_subset_exposes_targets() -> None:
    ds = _dataset()
    sub = LabeledSubset(ds, np.array([4, 5, 6, 7]))
    assert sub.targets.dtype == torch.int64 and sub.targets.tolist() == [0, 1, 2, 3]
    assert sub.classes == ds.classes and len(sub) == 4
    assert torch.equal(sub[1][0], ds.images[5])
    with pytest.raises(ValueError, match="targets"):
        LabeledSubset(torch.utils.data.TensorDataset(torch.zeros(3)), [0])
