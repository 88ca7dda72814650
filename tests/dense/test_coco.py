"""COCO-format folders: items, pair labels, splits and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchswap.dense.base import IGNORE_INDEX
from patchswap.dense.coco import CocoFolder
from patchswap.dense.datasets import build_dense_dataset


def write_coco(root: Path) -> Path:
    """Three 20x16 RGB images; categories 7 'dog' and 3 'cat' (-> labels 2 and 1)."""
    (root / "images").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((16, 20, 3), 40 * i, dtype=np.uint8)).save(root / "images" / f"{i}.png")

    def square(x: int, y: int, w: int, h: int) -> list[list[float]]:
        return [[x, y, x + w, y, x + w, y + h, x, y + h]]

    def ann(i: int, image: int, cat: int, box: tuple[int, int, int, int], crowd: int = 0) -> dict:
        return {
            "id": i,
            "image_id": image,
            "category_id": cat,
            "bbox": list(box),
            "segmentation": square(*box),
            "area": box[2] * box[3],
            "iscrowd": crowd,
        }

    data = {
        "images": [{"id": i + 1, "file_name": f"{i}.png", "width": 20, "height": 16} for i in range(3)],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            ann(1, 1, 3, (2, 2, 10, 8)),  # cat, 80 px
            ann(2, 1, 7, (6, 4, 4, 4)),  # dog painted over the cat, 16 px
            ann(3, 1, 7, (14, 10, 4, 4), crowd=1),  # crowd: ignored / 255
            ann(4, 2, 7, (0, 0, 20, 16)),  # dog fills image 2
        ],
    }
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def test_coco_folder_detection(tmp_path: Path) -> None:
    ds = CocoFolder(write_coco(tmp_path / "coco"), "detect")
    assert ds.classes == ["background", "cat", "dog"] and len(ds) == 3 and ds.in_chans == 3
    image, target = ds[0]
    assert image.shape == (3, 16, 20) and image.dtype == torch.uint8
    assert target["boxes"].tolist() == [[2, 2, 12, 10], [6, 4, 10, 8]]
    assert target["labels"].tolist() == [1, 2]  # crowd dropped
    assert ds[2][1]["boxes"].shape == (0, 4)
    assert int(ds[1][0][0, 0, 0]) == 40
    assert ds.pair_labels().tolist() == [1, 2, 0]


def test_coco_folder_segmentation(tmp_path: Path) -> None:
    ds = CocoFolder(write_coco(tmp_path / "coco"), "segment")
    _, mask = ds[0]
    assert mask.shape == (16, 20) and mask.dtype == torch.int64
    assert int(mask[3, 3]) == 1 and int(mask[6, 8]) == 2  # dog painted over cat
    assert int(mask[12, 16]) == IGNORE_INDEX and int(mask[0, 0]) == 0 and int(mask[14, 1]) == 0
    assert set(ds[1][1].unique().tolist()) == {2}
    assert ds.pair_labels().tolist() == [1, 2, 0]


def test_coco_folder_errors_and_splits(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")
    assert build_dense_dataset(f"coco:{root}", "detect", "train").num_classes == 3
    with pytest.raises(FileNotFoundError, match="val"):
        build_dense_dataset(f"coco:{root}", "detect", "val")
    with pytest.raises(FileNotFoundError, match="split_file"):
        CocoFolder(root, "detect", "other.json")
    (root / "images" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match="image_dir"):
        CocoFolder(root, "detect")[1]
