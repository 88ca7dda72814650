"""Detection on a transferred backbone: torchvision's Faster R-CNN / RetinaNet on an FPN, sized for
small images (no upscaling to 800 px, anchors proportional to the feature strides)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from patchswap.dense.features import DenseFeatures, dense_features, stage_nodes

__all__ = ["build_detection_model", "default_anchor_sizes"]


class _BackboneWithFPN(nn.Module):
    """Stage features -> FPN, with the ``out_channels`` attribute torchvision's detectors read.

    torchvision's own BackboneWithFPN replays ``children()`` (IntermediateLayerGetter); this one runs the
    FX extractor so the classifier's forward is reproduced exactly.
    """

    def __init__(self, features: DenseFeatures, fpn: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.body = features
        self.fpn = fpn
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


def default_anchor_sizes(arch: str, strides: Sequence[int]) -> tuple[tuple[float, ...], ...]:
    """One anchor size per pyramid level proportional to its stride: ``4 * stride``.

    Faster R-CNN: one size per level, the extra max-pool level at twice the last stride. RetinaNet:
    torchvision's three octave scales ``4s * 2**(k/3)`` per level, P6/P7 at 2x and 4x the last stride
    (torchvision uses 32 at stride 8, i.e. the same 4*stride rule). With ratios 0.5/1/2 each.
    """
    if arch == "fasterrcnn":
        levels = [*strides, 2 * strides[-1]]
        return tuple((float(4 * s),) for s in levels)
    levels = [*strides, 2 * strides[-1], 4 * strides[-1]]
    return tuple(tuple(round(4 * s * 2 ** (k / 3), 2) for k in range(3)) for s in levels)


def build_detection_model(
    arch: str,
    num_classes: int,
    backbone: nn.Module,
    *,
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    anchor_sizes: Sequence[Sequence[float]] | None = None,
    fpn_channels: int = 64,
    stages: int | None = None,
    representation_size: int = 256,
) -> nn.Module:
    """torchvision Faster R-CNN or RetinaNet on an FPN over the backbone's stages, for small images.

    ``num_classes`` includes background (label 0). Images are float in [0, 1] with ``image_mean`` /
    ``image_std`` in that scale (one value per channel; 1-channel images work), resized to
    ``min_size=max_size=image_size`` (no upscaling to torchvision's 800). ``stages`` defaults to all
    stages of stride 2 or more for Faster R-CNN (FPN + LastLevelMaxPool)
    and the 3 deepest for RetinaNet (FPN +
    LastLevelP6P7 from P5, torchvision's v1 convention). ``anchor_sizes``: one tuple per pyramid level,
    default :func:`default_anchor_sizes`. Faster R-CNN's box head is ``representation_size`` wide (256
    instead of 1024: small data) and its RoI level mapping is rescaled to the 4*stride anchors. Returns
    the torchvision model: train mode ``model(images, targets) -> losses``, eval ``-> detections``.
    """
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

    if arch not in ("fasterrcnn", "retinanet"):
        raise ValueError(f"unknown detection arch {arch!r}; choose fasterrcnn or retinanet")
    if num_classes < 2:
        raise ValueError(f"num_classes counts background too and must be >= 2, got {num_classes}")
    if len(image_mean) != len(image_std):
        raise ValueError(f"image_mean {list(image_mean)} and image_std {list(image_std)} differ in length")
    if stages is None and arch == "retinanet":
        stages = min(3, len(stage_nodes(backbone)))
    features = dense_features(backbone, stages)
    if stages is None and features.strides[0] == 1 and len(features.strides) > 1:
        # A full-resolution stage (CIFAR-style stems) would make the pyramid's largest level cost more
        # than the whole backbone; detectors start at stride 2 or more (torchvision's P2 is stride 4).
        features = dense_features(backbone, len(features.strides) - 1)
    channels, strides = features.channels, features.strides
    extra: ExtraFPNBlock = (
        LastLevelMaxPool() if arch == "fasterrcnn" else LastLevelP6P7(fpn_channels, fpn_channels)
    )
    fpn = FeaturePyramidNetwork(channels, fpn_channels, extra_blocks=extra)
    body = _BackboneWithFPN(features, fpn, fpn_channels)

    sizes = tuple(
        tuple(float(s) for s in level) for level in (anchor_sizes or default_anchor_sizes(arch, strides))
    )
    levels = len(strides) + (1 if arch == "fasterrcnn" else 2)
    if len(sizes) != levels:
        raise ValueError(f"anchor_sizes needs one tuple per pyramid level ({levels}), got {len(sizes)}")
    if len({len(s) for s in sizes}) != 1:
        raise ValueError("every level of anchor_sizes needs the same number of sizes")
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)
    common: dict[str, Any] = {
        "min_size": image_size,
        "max_size": image_size,
        "image_mean": list(image_mean),
        "image_std": list(image_std),
    }
    if arch == "retinanet":
        head = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes)
        return RetinaNet(body, num_classes, anchor_generator=anchors, head=head, **common)

    # LevelMapper sends a box of side canonical_scale to level canonical_level (stride 2**level):
    # 4 * 16 = 64 makes a box of side 4*stride land on the level whose anchors have that size.
    roi_pool = MultiScaleRoIAlign(features.names, output_size=7, sampling_ratio=2, canonical_scale=4 * 16)
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    return FasterRCNN(
        body,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        **common,
        **_proposal_budget(image_size),
    )


def _proposal_budget(image_size: int) -> dict[str, int]:
    """Fewer proposals and sampled RoIs for small images (torchvision's defaults are sized for 800 px).

    A 64x64 scene holds a handful of objects; 2,000 proposals and 512 sampled RoIs per image made the
    box head cost ~30x the backbone on CPU. The budget scales with the image area, capped at the defaults.
    """
    scale = min(1.0, (image_size / 800) ** 2)
    return {
        "rpn_pre_nms_top_n_train": max(200, int(2000 * scale)),
        "rpn_post_nms_top_n_train": max(100, int(2000 * scale)),
        "rpn_pre_nms_top_n_test": max(100, int(1000 * scale)),
        "rpn_post_nms_top_n_test": max(50, int(1000 * scale)),
        "box_batch_size_per_image": max(32, int(512 * scale)),
    }
