"""The options IPS shares between classification and dense tasks: the swap, and the distillation loss.

Defined once so the classification ``ips`` method and dense IPS cannot drift apart: each method's
``Options`` dataclass inherits these fields, which keeps the flat config keys (``ips.grid``,
``ips.temperature``, ...) that YAML files and ``--ips.key`` flags set. Core module: torch only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from patchswap.config_base import opt
from patchswap.ops import K_RULES, PatchSwap

__all__ = ["DistillOptions", "SwapOptions"]


@dataclass
class SwapOptions:
    """How a same-class pair swaps cells: the arguments of :func:`~patchswap.ops.patch_swap`, flat."""

    grid: int = opt(2, "cells per side (grid x grid); ignored when patch_size is set")
    patch_size: int | None = opt(None, "cell size in pixels instead of a grid")
    prob: float = opt(0.5, "probability that a pair swaps")
    k_rule: str = opt("uniform", "cells swapped: uniform in 1..G-1, fixed, or beta")
    ratio: float = opt(0.5, "swapped share for k_rule=fixed")
    beta_a: float = opt(1.0, "Beta(a, b) of the swapped share for k_rule=beta")
    beta_b: float = opt(1.0, "b of Beta(a, b) for k_rule=beta (see beta_a)")

    def swap_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~patchswap.ops.patch_swap` and :class:`~patchswap.ops.PatchSwap`."""
        return {
            "grid": (self.grid, self.grid) if self.patch_size is None else None,  # one of the two
            "patch_size": self.patch_size,
            "prob": self.prob,
            "k_rule": self.k_rule,
            "ratio": self.ratio,
            "beta": (self.beta_a, self.beta_b),
        }

    def patch_swap(self, prob: float | None = None) -> PatchSwap:
        """The configured op; ``prob`` overrides the option (e.g. during a warm-up)."""
        kwargs = self.swap_kwargs()
        if prob is not None:
            kwargs["prob"] = prob
        return PatchSwap(kwargs.pop("grid"), **kwargs)

    def check_swap(self, prefix: str = "") -> None:
        """Raise ``ValueError`` naming the option (``prefix`` + key) that is out of range."""
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"{prefix}prob must be in [0, 1], got {self.prob!r}")
        if self.patch_size is None and self.grid < 2:
            raise ValueError(
                f"{prefix}grid must be at least 2 (a 1x1 grid swaps whole images), got {self.grid!r}"
            )
        if self.patch_size is not None and self.patch_size < 1:
            raise ValueError(
                f"{prefix}patch_size must be a positive number of pixels, got {self.patch_size!r}"
            )
        if self.k_rule not in K_RULES:
            raise ValueError(f"{prefix}k_rule must be one of {', '.join(K_RULES)}, got {self.k_rule!r}")
        if self.k_rule == "fixed" and not 0.0 < self.ratio < 1.0:
            raise ValueError(f"{prefix}ratio must be in (0, 1) for k_rule=fixed, got {self.ratio!r}")
        if self.k_rule == "beta" and min(self.beta_a, self.beta_b) <= 0:
            raise ValueError(
                f"{prefix}beta_a and {prefix}beta_b must be positive for k_rule=beta, "
                f"got {self.beta_a!r} and {self.beta_b!r}"
            )


@dataclass
class DistillOptions:
    """The IPS loss: ``gamma * CE + alpha * KL`` with a temperature (see :mod:`patchswap.losses`)."""

    temperature: float = opt(4.0, "softening of both views' predictions in the KL")
    alpha: float = opt(1.0, "weight of the distillation term")
    gamma: float = opt(1.0, "weight of the cross-entropy term")
    t2_scaling: bool = opt(True, "multiply the KL by T^2")

    def loss_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~patchswap.losses.IPSLoss` and ``DenseIPSLoss``."""
        return {
            "temperature": self.temperature,
            "alpha": self.alpha,
            "gamma": self.gamma,
            "t2_scaling": self.t2_scaling,
        }

    def check_distill(self, prefix: str = "") -> None:
        """Raise ``ValueError`` naming the option (``prefix`` + key) that is out of range."""
        if not self.temperature > 0:
            raise ValueError(f"{prefix}temperature must be positive, got {self.temperature!r}")
        if self.alpha < 0 or self.gamma < 0:
            raise ValueError(
                f"{prefix}alpha and {prefix}gamma must be non-negative, got {self.alpha!r} and {self.gamma!r}"
            )
