"""The dense item conventions, pair labels and collate, on handmade scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from patchswap.dense.base import IGNORE_INDEX, collate_dense, dominant_mask_classes
from patchswap.dense.scene_datasets import SceneDetection, SceneSegmentation
from patchswap.dense.scenes import Scenes

CLASSES = ["background", "a", "b", "c"]


def handmade_scenes() -> Scenes:
    """Four 8x8 scenes whose dominant classes are known by construction."""
    masks = torch.zeros(4, 8, 8, dtype=torch.uint8)
    masks[0, :2, :3] = 1  # 6 px of class 1
    masks[0, 4:, 4:] = 2  # 16 px of class 2 -> segment pair label 2
    masks[1, :, :] = IGNORE_INDEX  # only ignore pixels -> 0
    masks[2, 0, :2] = 3  # tie 2 px class 3 vs 2 px class 1 -> lower class 1
    masks[2, 1, :2] = 1
    masks[3, :, :] = 0  # empty -> 0
    boxes = [
        torch.tensor([[0, 0, 6, 6], [4, 4, 8, 8]], dtype=torch.float32),  # area 36 vs 16 -> class 1
        torch.zeros(0, 4),
        torch.tensor([[0, 0, 2, 1], [0, 1, 2, 4]], dtype=torch.float32),  # class 3 area 2, class 1 area 6
        torch.zeros(0, 4),
    ]
    labels = [torch.tensor([1, 2]), torch.zeros(0, dtype=torch.int64), torch.tensor([3, 1]), torch.zeros(0)]
    images = (masks.unsqueeze(1) * 50).to(torch.uint8)
    return Scenes(images, masks, boxes, [x.long() for x in labels], CLASSES)


def test_scene_items_follow_conventions() -> None:
    scenes = handmade_scenes()
    seg, det = SceneSegmentation(scenes), SceneDetection(scenes)
    assert (seg.task, det.task, seg.in_chans, seg.classes, len(seg)) == ("segment", "detect", 1, CLASSES, 4)
    image, mask = seg[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.uint8
    assert mask.shape == (8, 8) and mask.dtype == torch.int64 and int(mask[5, 5]) == 2
    image, target = det[0]
    assert image.dtype == torch.uint8 and set(target) == {"boxes", "labels"}
    assert target["boxes"].dtype == torch.float32 and target["labels"].tolist() == [1, 2]
    target["boxes"] += 1  # editing an item leaves the stored scenes alone
    assert det[0][1]["boxes"][0].tolist() == [0, 0, 6, 6]


def test_pair_labels_on_handmade_scenes() -> None:
    scenes = handmade_scenes()
    seg, det = SceneSegmentation(scenes), SceneDetection(scenes)
    assert seg.pair_labels().tolist() == [2, 0, 1, 0]
    assert det.pair_labels().tolist() == [1, 0, 1, 0]
    assert seg.pair_labels().dtype == np.int64 and det.pair_labels().dtype == np.int64
    # Chunking over many masks gives the same answer as one image at a time.
    many = scenes.masks.repeat(700, 1, 1)
    assert dominant_mask_classes(many, 4).tolist() == [2, 0, 1, 0] * 700


def test_collate_both_tasks() -> None:
    scenes = handmade_scenes()
    images, masks = next(iter(DataLoader(SceneSegmentation(scenes), 3, collate_fn=collate_dense("segment"))))
    assert images.shape == (3, 1, 8, 8) and masks.shape == (3, 8, 8)
    images, targets = next(iter(DataLoader(SceneDetection(scenes), 4, collate_fn=collate_dense("detect"))))
    assert images.shape == (4, 1, 8, 8) and len(targets) == 4 and targets[1]["boxes"].shape == (0, 4)
    mixed = [(torch.zeros(3, 4, 5, dtype=torch.uint8), {}), (torch.zeros(3, 6, 5, dtype=torch.uint8), {})]
    assert isinstance(collate_dense("detect")(mixed)[0], list)
    with pytest.raises(ValueError, match="transforms"):
        collate_dense("segment")([(mixed[0][0], torch.zeros(4, 5)), (mixed[1][0], torch.zeros(6, 5))])
    with pytest.raises(ValueError, match="task"):
        collate_dense("classify")
