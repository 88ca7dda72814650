"""Scenes by name: seeded, disjoint splits from the MNIST arrays."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from patchswap.dense.datasets import SceneDetection, SceneSegmentation, build_dense_dataset

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.skipif(
    not (SHARED_DATA / "mnist-train.npz").is_file(),
    reason=f"real MNIST digits not available at {SHARED_DATA / 'mnist-train.npz'}",
)
def test_build_scenes_splits() -> None:
    made = {
        split: build_dense_dataset("scenes", "detect", split, data_dir=str(SHARED_DATA), scene_count=8)
        for split in ("train", "val", "test")
    }
    assert [len(d) for d in made.values()] == [8, 8, 8]
    assert isinstance(made["train"], SceneDetection) and made["train"].classes[1] == "0"
    assert not torch.equal(made["train"].scenes.images, made["val"].scenes.images)
    again = build_dense_dataset("scenes", "detect", "val", data_dir=str(SHARED_DATA), scene_count=8)
    assert torch.equal(again.scenes.images, made["val"].scenes.images)
    seg = build_dense_dataset("scenes", "segment", "test", data_dir=str(SHARED_DATA), scene_count=8)
    assert isinstance(seg, SceneSegmentation) and seg.pair_labels().shape == (8,)
