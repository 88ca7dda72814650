"""Dense datasets: item conventions, pair labels, COCO and VOC folders, names and collate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from patchswap.data.sources import DatasetNotFoundError
from patchswap.dense.datasets import (
    IGNORE_INDEX,
    CocoFolder,
    SceneDetection,
    SceneSegmentation,
    VOCDetection,
    VOCSegmentation,
    build_dense_dataset,
    collate_dense,
    dominant_mask_classes,
)
from patchswap.dense.scenes import Scenes

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
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


# ---------------------------------------------------------------------------------------------------
# COCO folder
# ---------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------------------------------
VOC_XML = """<annotation><filename>a.jpg</filename>
<object><name>dog</name><difficult>0</difficult>
<bndbox><xmin>2</xmin><ymin>3</ymin><xmax>10</xmax><ymax>8</ymax></bndbox></object>
<object><name>person</name><difficult>1</difficult>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>16</xmax><ymax>12</ymax></bndbox></object>
</annotation>"""


def write_voc(root: Path) -> Path:
    """A one-image VOC2012 devkit with a detection XML and a palette segmentation mask."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("ImageSets/Main", "ImageSets/Segmentation", "JPEGImages", "Annotations", "SegmentationClass"):
        (voc / sub).mkdir(parents=True)
    (voc / "ImageSets/Main/train.txt").write_text("a\n")
    (voc / "ImageSets/Segmentation/train.txt").write_text("a\n")
    Image.fromarray(np.zeros((12, 16, 3), dtype=np.uint8)).save(voc / "JPEGImages/a.jpg")
    (voc / "Annotations/a.xml").write_text(VOC_XML)
    mask = np.zeros((12, 16), dtype=np.uint8)
    mask[2:6, 2:6], mask[6:, :] = 12, 15  # 16 px dog, 96 px person
    mask[5, :] = 255  # border: ignore
    png = Image.frombytes("P", (16, 12), mask.tobytes())  # palette indices, as VOC stores them
    png.putpalette(list(range(256)) * 3)
    png.save(voc / "SegmentationClass/a.png")
    return root


def test_voc_detection_parses_xml(tmp_path: Path) -> None:
    root = write_voc(tmp_path)
    ds = VOCDetection(root)
    image, target = ds[0]
    assert image.shape == (3, 12, 16) and image.dtype == torch.uint8 and ds.classes[12] == "dog"
    assert target["boxes"].tolist() == [[1, 2, 10, 8]] and target["labels"].tolist() == [12]
    assert ds.pair_labels().tolist() == [12]
    kept = VOCDetection(root, keep_difficult=True)
    assert kept[0][1]["labels"].tolist() == [12, 15] and kept.pair_labels().tolist() == [15]


def test_voc_segmentation_keeps_ignore_and_caches_pair_labels(tmp_path: Path) -> None:
    root = write_voc(tmp_path)
    ds = VOCSegmentation(root)
    _, mask = ds[0]
    assert mask.dtype == torch.int64 and set(mask.unique().tolist()) == {0, 12, 15, 255}
    assert ds.pair_labels().tolist() == [15]
    cache = root / "VOCdevkit/VOC2012/patchswap-pair-labels-train.npy"
    assert np.load(cache).tolist() == [15]
    assert VOCSegmentation(root).pair_labels().tolist() == [15]


def test_voc_missing_data_says_what_to_do(tmp_path: Path) -> None:
    for cls in (VOCSegmentation, VOCDetection):
        with pytest.raises(DatasetNotFoundError) as info:
            cls(tmp_path / "nothing", image_set="val")
        text = str(info.value)
        assert "--data.download true" in text and "--data.data_dir" in text and "VOCdevkit" in text
        assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match="--data.download true"):
        build_dense_dataset("voc2007", "detect", "test", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not public"):
        build_dense_dataset("voc", "segment", "test", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------------
# build_dense_dataset
# ---------------------------------------------------------------------------------------------------
def test_unknown_names_and_bad_options() -> None:
    with pytest.raises(ValueError, match="scenes.*voc.*coco:DIR"):
        build_dense_dataset("imagenet", "segment", "train")
    with pytest.raises(ValueError, match="task"):
        build_dense_dataset("scenes", "classify", "train")
    with pytest.raises(ValueError, match="split"):
        build_dense_dataset("scenes", "segment", "holdout")


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
