"""CIFAR VGG-8 / VGG-13 with BatchNorm, as in CRD / mdistiller (``vgg8_bn`` / ``vgg13_bn``).

Five conv groups (conv3x3 with bias, BN, ReLU) separated by 2x2 max-pools, then global average pooling and
a single 512->classes linear layer (no 4096-wide FC stack: it would dominate the parameters on 32x32
inputs). As in the reference code the fourth max-pool is applied only to inputs of at least 64x64, so a
32x32 image reaches the last group at 4x4 and a 28x28 one at 3x3 instead of vanishing.
"""

from __future__ import annotations

from torch import Tensor, nn

from patchswap.models.registry import register_model
from patchswap.models.weight_init import init_he_fan_out

__all__ = ["VGG"]

# Output channels of each conv in the five groups.
_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


def _group(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        in_channels = width
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG-BN backbone for small images; ``config`` lists each group's conv widths."""

    def __init__(
        self, config: tuple[tuple[int, ...], ...], num_classes: int = 100, in_chans: int = 3
    ) -> None:
        super().__init__()
        groups = []
        in_channels = in_chans
        for widths in config:
            groups.append(_group(in_channels, widths))
            in_channels = widths[-1]
        self.block0, self.block1, self.block2, self.block3, self.block4 = groups
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)

        init_he_fan_out(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.block0(x))
        x = self.pool(self.block1(x))
        x = self.pool(self.block2(x))
        x = self.block3(x)
        if x.shape[-1] >= 8 and x.shape[-2] >= 8:  # i.e. input >= 64x64, as the reference `h == 64`
            x = self.pool(x)
        x = self.block4(x)
        return self.classifier(self.avgpool(x).flatten(1))


@register_model("vgg8")
def vgg8(num_classes: int = 100, in_chans: int = 3) -> VGG:
    return VGG(_CONFIGS["vgg8"], num_classes, in_chans)


@register_model("vgg13")
def vgg13(num_classes: int = 100, in_chans: int = 3) -> VGG:
    return VGG(_CONFIGS["vgg13"], num_classes, in_chans)
