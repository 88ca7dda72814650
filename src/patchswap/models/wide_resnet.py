"""Wide ResNets (Zagoruyko & Komodakis, 2016) as used by CRD / mdistiller on CIFAR.

``wrn_D_K`` has depth ``D = 6n + 4`` and widening factor ``K``: a 16-channel 3x3 stem, three stages of
pre-activation blocks with widths ``16K, 32K, 64K`` (strides 1, 2, 2), final BN-ReLU, global average
pooling and a linear classifier. Projection shortcuts are bias-free 1x1 convs without BN, applied to the
pre-activated input, exactly like the reference code, so published WRN teacher/student numbers carry over.
"""

from __future__ import annotations

from torch import Tensor, nn

from patchswap.models.registry import register_model
from patchswap.models.weight_init import init_he_fan_out

__all__ = ["WideResNet"]


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3 twice, optional dropout in between."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        # The reference code projects the *pre-activated* input when the shape changes.
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.relu(self.bn2(self.conv1(pre)))
        out = self.conv2(self.dropout(out))
        return out + identity


class WideResNet(nn.Module):
    """WRN-depth-widen_factor for small images; adaptive pooling lets any input size through."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, ...), got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for width, stride in zip(widths[1:], (1, 2, 2), strict=True):
            blocks = [
                WideBasicBlock(in_planes if i == 0 else width, width, stride if i == 0 else 1, drop_rate)
                for i in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            in_planes = width
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

        init_he_fan_out(self, linear_std=None)  # He init over fan-out, as in the reference implementation

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn(x))
        return self.fc(self.avgpool(x).flatten(1))


@register_model("wrn_16_2")
def wrn_16_2(num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0) -> WideResNet:
    return WideResNet(16, 2, num_classes, in_chans, drop_rate)


@register_model("wrn_40_2")
def wrn_40_2(num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0) -> WideResNet:
    return WideResNet(40, 2, num_classes, in_chans, drop_rate)


@register_model("wrn_28_10")
def wrn_28_10(num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0) -> WideResNet:
    return WideResNet(28, 10, num_classes, in_chans, drop_rate)
