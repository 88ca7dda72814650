"""CIFAR ShuffleNetV2 (Ma et al., 2018) as in CRD / mdistiller (``ShuffleV2``, net size 1.0).

Stem: a 1x1 conv to 24 channels with no downsampling (the reference CIFAR code's choice, kept so results
are comparable). Three stages of one stride-2 down-sampling unit followed by 3 / 7 / 3 basic units with
widths 116 / 232 / 464, a 1x1 conv to 1024 channels, global average pooling and one linear layer.
``net_size`` (0.5, 1, 1.5, 2) selects the other standard widths.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from patchswap.models.registry import register_model

__all__ = ["ShuffleNetV2"]

# net_size -> (stage widths + head width, extra basic units per stage)
_CONFIGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2.0: ((224, 488, 976, 2048), (3, 7, 3)),
}


def _channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    """Interleave the channels of the two branches so information crosses between them."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _conv_bn(in_c: int, out_c: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_c, out_c, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_c),
    )


class ShuffleUnit(nn.Module):
    """Basic unit: half the channels pass through, the other half go 1x1 -> dw3x3 -> 1x1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.split = channels // 2
        branch = channels - self.split
        self.branch = nn.Sequential(
            _conv_bn(branch, branch, 1),
            nn.ReLU(inplace=True),
            _conv_bn(branch, branch, 3, groups=branch),
            _conv_bn(branch, branch, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        return _channel_shuffle(torch.cat([x1, self.branch(x2)], dim=1))


class DownUnit(nn.Module):
    """Stride-2 unit: both branches see the whole input, so the width can grow."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.left = nn.Sequential(
            _conv_bn(in_channels, in_channels, 3, stride=2, groups=in_channels),
            _conv_bn(in_channels, mid, 1),
            nn.ReLU(inplace=True),
        )
        self.right = nn.Sequential(
            _conv_bn(in_channels, mid, 1),
            nn.ReLU(inplace=True),
            _conv_bn(mid, mid, 3, stride=2, groups=mid),
            _conv_bn(mid, mid, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return _channel_shuffle(torch.cat([self.left(x), self.right(x)], dim=1))


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 for small images; adaptive pooling lets 28x28 and 64x64 inputs through."""

    def __init__(self, num_classes: int = 100, in_chans: int = 3, net_size: float = 1.0) -> None:
        super().__init__()
        if float(net_size) not in _CONFIGS:
            raise ValueError(f"net_size must be one of {sorted(_CONFIGS)}, got {net_size}")
        widths, repeats = _CONFIGS[float(net_size)]
        self.conv1 = _conv_bn(in_chans, 24, 1)
        self.relu = nn.ReLU(inplace=True)
        stages: list[nn.Module] = []
        in_channels = 24
        for width, n in zip(widths[:3], repeats, strict=True):
            stages.append(
                nn.Sequential(DownUnit(in_channels, width), *[ShuffleUnit(width) for _ in range(n)])
            )
            in_channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = _conv_bn(in_channels, widths[3], 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu(self.conv2(x))
        return self.fc(self.avgpool(x).flatten(1))


@register_model("shufflenetv2")
def shufflenetv2(num_classes: int = 100, in_chans: int = 3, net_size: float = 1.0) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes, in_chans, net_size)
