"""CIFAR ResNets used throughout the distillation literature.

Three families, all with a 3x3 stride-1 stem and no max-pool (32x32 inputs are too small to lose
resolution early) and global adaptive average pooling, so 28x28 MNIST or 64x64 inputs also work:

* ``resnet8 ... resnet110``, ``resnet8x4``, ``resnet32x4``: the three-stage He et al. (2016) CIFAR
  ResNets exactly as in CRD / mdistiller (``depth = 6n + 2``, 1x1-conv+BN projection shortcuts), so
  accuracies are comparable with the KD tables that use them.
* ``resnet18/34/50``: the four-stage ImageNet ResNets with a CIFAR stem (the common kuangliu /
  mdistiller ``resnetv2`` variant).
* ``preact_resnet18``: the pre-activation ResNet-18 (He et al., 2016b) of the CS-KD / self-distillation
  papers, with the final BN-ReLU of the original design before pooling.
"""

from __future__ import annotations

from torch import Tensor, nn

from patchswap.models.registry import register_model

__all__ = ["CifarResNet", "PreActResNet", "ResNet"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN shortcut when the residual changes shape, identity otherwise."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


def _init_weights(model: nn.Module) -> None:
    """He init for convs (fan_out, as in torchvision/mdistiller), unit-gain BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (post-activation)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a residual connection."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_stage(
    block: type[BasicBlock] | type[Bottleneck], in_planes: int, planes: int, blocks: int, stride: int
) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for i in range(blocks):
        layers.append(block(in_planes, planes, stride if i == 0 else 1))
        in_planes = planes * block.expansion
    return nn.Sequential(*layers), in_planes


class CifarResNet(nn.Module):
    """Three-stage CIFAR ResNet (CRD/mdistiller ``resnet``): stem -> 3 stages (strides 1, 2, 2) -> fc.

    ``widths`` is ``(stem, stage1, stage2, stage3)``: ``(16, 16, 32, 64)`` for resnet8..110 and
    ``(32, 64, 128, 256)`` for the 4x-wide teachers resnet8x4 / resnet32x4.
    """

    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        num_classes: int = 100,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        self.layer1, in_planes = _make_stage(BasicBlock, in_planes, widths[1], n, 1)
        self.layer2, in_planes = _make_stage(BasicBlock, in_planes, widths[2], n, 2)
        self.layer3, in_planes = _make_stage(BasicBlock, in_planes, widths[3], n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


class ResNet(nn.Module):
    """Four-stage ResNet-18/34/50 with a CIFAR stem (3x3 stride-1 conv, no max-pool)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: tuple[int, int, int, int],
        num_classes: int = 100,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_chans, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        in_planes = 64
        self.layer1, in_planes = _make_stage(block, in_planes, 64, num_blocks[0], 1)
        self.layer2, in_planes = _make_stage(block, in_planes, 128, num_blocks[1], 2)
        self.layer3, in_planes = _make_stage(block, in_planes, 256, num_blocks[2], 2)
        self.layer4, in_planes = _make_stage(block, in_planes, 512, num_blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU before each conv, shortcut taken after the first BN-ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class PreActResNet(nn.Module):
    """Pre-activation ResNet with a CIFAR stem; the final BN-ReLU normalises the last residual sum."""

    def __init__(
        self, num_blocks: tuple[int, int, int, int], num_classes: int = 100, in_chans: int = 3
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_chans, 64)
        layers: list[nn.Module] = []
        in_planes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True)):
            for j in range(blocks):
                layers.append(PreActBlock(in_planes, planes, 2 if i > 0 and j == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.conv1(x))
        x = self.relu(self.bn(x))
        return self.fc(self.avgpool(x).flatten(1))


# --------------------------------------------------------------------------- registered builders
_NARROW = (16, 16, 32, 64)
_WIDE_X4 = (32, 64, 128, 256)


@register_model("resnet8")
def resnet8(num_classes: int = 100, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(8, _NARROW, num_classes, in_chans)


@register_model("resnet14")
def resnet14(num_classes: int = 100, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(14, _NARROW, num_classes, in_chans)


@register_model("resnet20")
def resnet20(num_classes: int = 100, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(20, _NARROW, num_classes, in_chans)


@register_model("resnet32")
def resnet32(num_classes: int = 100, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(32, _NARROW, num_classes, in_chans)


@register_model("resnet44")
def resnet44(num_classes: int = 100, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(44, _NARROW, num_classes, in_chans)


@register_model("resnet56")
def resnet56(num_classes: int = 100, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(56, _NARROW, num_classes, in_chans)


@register_model("resnet110")
def resnet110(num_classes: int = 100, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(110, _NARROW, num_classes, in_chans)


@register_model("resnet8x4")
def resnet8x4(num_classes: int = 100, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(8, _WIDE_X4, num_classes, in_chans)


@register_model("resnet32x4")
def resnet32x4(num_classes: int = 100, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(32, _WIDE_X4, num_classes, in_chans)


@register_model("resnet18")
def resnet18(num_classes: int = 100, in_chans: int = 3) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans)


@register_model("resnet34")
def resnet34(num_classes: int = 100, in_chans: int = 3) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans)


@register_model("resnet50")
def resnet50(num_classes: int = 100, in_chans: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans)


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int = 100, in_chans: int = 3) -> PreActResNet:
    return PreActResNet((2, 2, 2, 2), num_classes, in_chans)
