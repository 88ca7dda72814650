"""The weight initialisation of the zoo's reference implementations that init convolutions by hand."""

from __future__ import annotations

import math

from torch import nn

__all__ = ["init_he_fan_out"]


def init_he_fan_out(model: nn.Module, *, linear_std: float | None = 0.01) -> None:
    """He-normal convolutions over fan-out (``N(0, sqrt(2 / (k * k * out_channels)))``) with zero bias,
    unit-gain BatchNorm, and linear layers with zero bias and ``N(0, linear_std)`` weights (their own
    default init kept when ``linear_std`` is None)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
