"""Segmentation on a transferred backbone: torchvision's DeepLabV3 / FCN heads on its last stage."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from patchswap.dense.features import DenseFeatures, dense_features

__all__ = ["SegmentationModel", "build_segmentation_model"]


class _LastStage(nn.Module):
    """torchvision's segmentation models read the backbone's ``"out"`` feature."""

    def __init__(self, features: DenseFeatures) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.features(x)[self.features.names[-1]]}


class SegmentationModel(nn.Module):
    """``forward(images) -> logits [N, K, H, W]`` at the input size, around a torchvision model.

    With ``image_mean``/``image_std`` the input is float images in [0, 1], normalised here per channel
    (as torchvision's detection models do); without, it must already be normalised.
    """

    def __init__(
        self,
        net: nn.Module,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.normalize = image_mean is not None
        if (image_mean is None) != (image_std is None):
            raise ValueError("give both image_mean and image_std, or neither")
        mean = torch.as_tensor(list(image_mean or [0.0]), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(list(image_std or [1.0]), dtype=torch.float32).view(1, -1, 1, 1)
        if bool((std <= 0).any()):
            raise ValueError(f"image_std must be positive, got {list(image_std or [])}")
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.normalize:
            if x.shape[1] != self.image_mean.shape[1]:
                raise ValueError(
                    f"images have {x.shape[1]} channels but image_mean/std have {self.image_mean.shape[1]}"
                )
            x = (x - self.image_mean) / self.image_std
        return self.net(x)["out"]


def build_segmentation_model(
    arch: str,
    num_classes: int,
    backbone: nn.Module,
    *,
    atrous_rates: Sequence[int] = (6, 12, 18),
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
) -> nn.Module:
    """DeepLabV3 or FCN (torchvision's heads and classes) on the backbone's last stage.

    ``atrous_rates`` default to DeepLabV3's output-stride-16 rates rather than torchvision's (12, 24, 36),
    which assume a dilated output-stride-8 ResNet on large images: small feature maps would see
    mostly padding. No auxiliary head. The result returns logits, not torchvision's dict.
    """
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    features = dense_features(backbone, stages=1)
    channels = features.channels
    if arch == "deeplabv3":
        net: nn.Module = DeepLabV3(_LastStage(features), DeepLabHead(channels[-1], num_classes, atrous_rates))
    elif arch == "fcn":
        net = FCN(_LastStage(features), FCNHead(channels[-1], num_classes))
    else:
        raise ValueError(f"unknown segmentation arch {arch!r}; choose deeplabv3 or fcn")
    return SegmentationModel(net, image_mean, image_std)
