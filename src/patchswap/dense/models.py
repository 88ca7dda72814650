"""Transfer a patchswap classification backbone to torchvision's dense models.

The classifier (zoo, timm or torchvision; random or trained by ``patchswap train``) is loaded
(:mod:`~patchswap.dense.backbones`), cut into its stages with torchvision's FX feature extraction
(:mod:`~patchswap.dense.features`), and the stages feed torchvision's own heads: DeepLabV3 / FCN for
segmentation (:mod:`~patchswap.dense.segmentation`), Faster R-CNN / RetinaNet on an FPN for detection
(:mod:`~patchswap.dense.detection`). This module builds either from a task name and re-exports the
public names of the four.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from torch import nn

from patchswap.dense.backbones import LoadedBackbone, load_backbone
from patchswap.dense.detection import build_detection_model, default_anchor_sizes
from patchswap.dense.features import DenseFeatures, feature_extractor
from patchswap.dense.segmentation import SegmentationModel, build_segmentation_model

__all__ = [
    "DenseFeatures",
    "DenseModel",
    "LoadedBackbone",
    "SegmentationModel",
    "build_dense_model",
    "build_detection_model",
    "build_segmentation_model",
    "default_anchor_sizes",
    "feature_extractor",
    "load_backbone",
]


class DenseModel(NamedTuple):
    """A segmentation or detection model, a description of its backbone's weights, and the backbone's
    model name."""

    model: nn.Module
    origin: str
    backbone_name: str


def build_dense_model(
    task: str,
    arch: str,
    num_classes: int,
    backbone_spec: str | Path,
    *,
    in_chans: int,
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> DenseModel:
    """A segmentation (``"segment"``) or detection (``"detect"``) model on a transferred backbone.

    Both take float images in [0, 1] and normalise them with ``image_mean``/``image_std`` themselves.
    Returns the model, a description of the backbone's weights and the backbone's model name.
    """
    if task not in ("segment", "detect"):
        raise ValueError(f"unknown dense task {task!r}; choose segment or detect")
    backbone, origin, name = load_backbone(backbone_spec, in_chans=in_chans)
    if task == "segment":
        model = build_segmentation_model(
            arch, num_classes, backbone, image_mean=image_mean, image_std=image_std
        )
    else:
        model = build_detection_model(
            arch, num_classes, backbone, image_size=image_size, image_mean=image_mean, image_std=image_std
        )
    return DenseModel(model, f"{task} {arch} ({num_classes} classes) on {origin}", name)
