"""Pascal VOC: XML boxes, palette masks, cached pair labels and missing-data errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchswap.data import DatasetNotFoundError
from patchswap.dense.datasets import build_dense_dataset
from patchswap.dense.voc import VOCDetection, VOCSegmentation

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
