"""CIFAR MobileNetV2 in the CRD / mdistiller ``mobile_half`` configuration.

This is the "MobileNetV2" of the CIFAR-100 knowledge-distillation tables (CRD, DKD, ...): the
Sandler et al. (2018) inverted-residual layout with width multiplier 0.5 and expansion 6, a stride-2
3x3 stem (32x32 -> 16x16, then three more stride-2 stages down to 2x2), a 1280-channel 1x1 head conv and
one linear layer. Unlike torchvision's block, every block (also the t=1 one) has its 1x1 expansion conv,
and ReLU (not ReLU6) is used, as in the reference code. Pooling is adaptive so 28x28 and 64x64 work.
``width_mult`` and ``expansion`` are exposed as keyword arguments for other widths.
"""

from __future__ import annotations

from torch import Tensor, nn

from patchswap.models.registry import register_model
from patchswap.models.weight_init import init_he_fan_out

__all__ = ["MobileNetV2"]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection; residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for small images (defaults = CRD ``mobile_half``: width 0.5, expansion 6)."""

    def __init__(
        self,
        num_classes: int = 100,
        in_chans: int = 3,
        width_mult: float = 0.5,
        expansion: int = 6,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        # (expansion, channels, repeats, first stride) per stage.
        setting = [
            (1, 16, 1, 1),
            (expansion, 24, 2, 1),
            (expansion, 32, 3, 2),
            (expansion, 64, 4, 2),
            (expansion, 96, 3, 1),
            (expansion, 160, 3, 2),
            (expansion, 320, 1, 1),
        ]
        channels = max(1, int(32 * width_mult))
        self.conv1 = _conv_bn_relu(in_chans, channels, 3, stride=2)
        blocks: list[nn.Module] = []
        for t, c, n, s in setting:
            out_channels = max(1, int(c * width_mult))
            stage = []
            for i in range(n):
                stage.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t))
                channels = out_channels
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, last_channels, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_channels, num_classes)

        init_he_fan_out(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(self.blocks(self.conv1(x)))
        return self.classifier(self.avgpool(x).flatten(1))


@register_model("mobilenetv2")
def mobilenetv2(
    num_classes: int = 100, in_chans: int = 3, width_mult: float = 0.5, expansion: int = 6
) -> MobileNetV2:
    return MobileNetV2(num_classes, in_chans, width_mult=width_mult, expansion=expansion)
