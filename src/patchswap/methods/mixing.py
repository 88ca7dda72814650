"""Batched Cutout, MixUp and CutMix on the device, shared by their methods and by IPS (``mix=...``).

Pure tensor code: no Python loop over samples and no host synchronisation. Every random draw comes
from the ``generator`` passed in (on its device; the global RNG when it is ``None``), in a fixed
order whatever the outcome, so a seeded generator fixes the result.

``views`` describes a batch made of ``views`` blocks of ``m`` rows where row ``j`` of every block
belongs to group ``j`` (IPS: ``[anchors..., partners...]``, ``views=2``): a group shares its random
draw -- the same Cutout hole, the same mixing partner (same row of each block), the same box -- so
all its views keep one target.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MIX_MODES",
    "MixResult",
    "cutmix",
    "cutout",
    "cutout_mask",
    "mix_targets",
    "mixup",
    "sample_beta",
    "sample_gamma",
]

MIX_MODES = ("none", "cutout", "mixup", "cutmix")

# Marsaglia-Tsang proposals per Gamma draw: each is accepted with probability > 0.95 (shape >= 1),
# so the chance that none of 16 is accepted is below 1e-20.
_GAMMA_CANDIDATES = 16


class MixResult(NamedTuple):
    """A mixed batch, each group's partner (row ``perm[j]`` of the same block) and the weight ``lam``
    (a 0-d float32 tensor) of the group's own label: targets are ``lam * y + (1 - lam) * y[perm]``."""

    x: Tensor
    perm: Tensor
    lam: Tensor


def _draw_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def sample_gamma(
    concentration: float,
    size: tuple[int, ...] = (),
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``log`` of Gamma(concentration, 1) variates (float32), drawn from ``generator``.

    ``torch.distributions`` cannot take a generator, so this is Marsaglia & Tsang's (2000) method,
    loop-free: 16 proposals per variate and the first accepted one is kept; shapes below 1 use
    ``Gamma(a) = Gamma(a + 1) * U^(1/a)``. The log keeps tiny shapes (``U^(1/a)`` underflows) exact.
    """
    a = float(concentration)
    if not a > 0 or not math.isfinite(a):
        raise ValueError(f"Gamma concentration must be positive and finite, got {concentration!r}")
    dev = _draw_device(generator, device)
    d = (a + 1.0 if a < 1.0 else a) - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = torch.randn((*size, _GAMMA_CANDIDATES), generator=generator, device=dev)
    u = 1.0 - torch.rand((*size, _GAMMA_CANDIDATES), generator=generator, device=dev)  # (0, 1]
    v = (1.0 + c * z) ** 3
    log_v = torch.log(v.clamp_min(1e-30))
    accept = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
    first = accept.to(torch.uint8).argmax(dim=-1, keepdim=True)  # first accepted proposal
    log_g = math.log(d) + log_v.gather(-1, first).squeeze(-1)
    if a < 1.0:
        u_boost = 1.0 - torch.rand(tuple(size), generator=generator, device=dev)
        log_g = log_g + torch.log(u_boost) / a
    return log_g


def sample_beta(
    a: float,
    b: float,
    size: tuple[int, ...] = (),
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Beta(a, b) variates (float32) as ``G_a / (G_a + G_b)`` from two Gamma draws of ``generator``."""
    log_ga = sample_gamma(a, size, generator=generator, device=device)
    log_gb = sample_gamma(b, size, generator=generator, device=device)
    return torch.sigmoid(log_ga - log_gb)


def _groups(n: int, views: int) -> int:
    if views < 1 or n % views:
        raise ValueError(f"a batch of {n} rows cannot be split into {views} equal view blocks")
    return n // views


def _full_index(perm: Tensor, views: int) -> Tensor:
    """Row index of each row's partner in the whole batch: the same partner row in every block."""
    m = perm.shape[0]
    offsets = torch.arange(views, device=perm.device)[:, None] * m
    return (offsets + perm[None, :]).reshape(-1)


def _keep_format(out: Tensor, like: Tensor) -> Tensor:
    """Give ``out`` the memory format of ``like`` (channels_last batches stay channels_last)."""
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out


def _check_images(x: Tensor, what: str) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"{what} needs a float image batch [N, C, H, W], got {x.dtype} {tuple(x.shape)}")


def cutout_mask(
    n: int,
    height: int,
    width: int,
    size: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """One ``size x size`` square hole per image, ``[n, height, width]`` bool (True inside the hole).

    As in DeVries & Taylor (2017), the centre is uniform over all pixels and the square is clipped at
    the border, so holes near an edge are smaller. The hole spans rows ``[cy - size // 2, + size)``.
    """
    if size < 1:
        raise ValueError(f"cutout size must be at least 1 pixel, got {size!r}")
    dev = _draw_device(generator, device)
    cy = torch.randint(0, height, (n,), generator=generator, device=dev)
    cx = torch.randint(0, width, (n,), generator=generator, device=dev)
    y0, x0 = cy - size // 2, cx - size // 2
    rows = torch.arange(height, device=dev)
    cols = torch.arange(width, device=dev)
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + size)[:, None])
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + size)[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return mask.to(device if device is not None else dev)


def cutout(x: Tensor, size: int, *, generator: torch.Generator | None = None, views: int = 1) -> Tensor:
    """Zero one random square per image (per group: its views share the hole); returns a new batch.

    ``x`` is normalised, so zero is the dataset mean, as in the paper's code (Cutout after normalising).
    """
    _check_images(x, "cutout")
    m = _groups(x.shape[0], views)
    h, w = x.shape[-2:]
    mask = cutout_mask(m, h, w, size, generator=generator, device=x.device)
    if views > 1:
        mask = mask.repeat(views, 1, 1)
    return _keep_format(x.masked_fill(mask[:, None], 0.0), x)


def mixup(x: Tensor, alpha: float, *, generator: torch.Generator | None = None, views: int = 1) -> MixResult:
    """MixUp (Zhang et al. 2018): ``lam * x + (1 - lam) * x[perm]``, one ``lam ~ Beta(alpha, alpha)``
    per batch and a random permutation of the groups as partners."""
    _check_images(x, "mixup")
    m = _groups(x.shape[0], views)
    dev = _draw_device(generator, x.device)
    lam = sample_beta(alpha, alpha, generator=generator, device=dev).to(x.device)
    perm = torch.randperm(m, generator=generator, device=dev).to(x.device)
    partner = x[_full_index(perm, views)]
    lam_x = lam.to(x.dtype)
    out = x * lam_x + partner * (1 - lam_x)
    return MixResult(_keep_format(out, x), perm, lam)


def cutmix(
    x: Tensor,
    alpha: float,
    *,
    prob: float = 1.0,
    generator: torch.Generator | None = None,
    views: int = 1,
) -> MixResult:
    """CutMix (Yun et al. 2019): paste one box of ``x[perm]`` into every image of the batch.

    With probability ``prob`` per batch (timm's ``prob``), ``lam ~ Beta(alpha, alpha)`` sets the box
    side ``floor(side * sqrt(1 - lam))`` around a uniform centre, clipped at the border as in the
    paper's code; the returned ``lam`` is corrected to ``1 - box area / image area``. Otherwise the
    batch is returned unchanged with ``lam = 1``. The draws are the same either way.
    """
    _check_images(x, "cutmix")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"cutmix prob must be in [0, 1], got {prob!r}")
    m = _groups(x.shape[0], views)
    h, w = x.shape[-2:]
    dev = _draw_device(generator, x.device)
    lam = sample_beta(alpha, alpha, generator=generator, device=dev)
    perm = torch.randperm(m, generator=generator, device=dev)
    apply = torch.rand((), generator=generator, device=dev) < prob
    cy = torch.randint(0, h, (), generator=generator, device=dev)
    cx = torch.randint(0, w, (), generator=generator, device=dev)
    ratio = torch.sqrt(1.0 - lam)
    half_h = torch.floor(h * ratio).long() // 2
    half_w = torch.floor(w * ratio).long() // 2
    half_h, half_w = torch.where(apply, half_h, 0), torch.where(apply, half_w, 0)
    y0, y1 = (cy - half_h).clamp(0, h), (cy + half_h).clamp(0, h)
    x0, x1 = (cx - half_w).clamp(0, w), (cx + half_w).clamp(0, w)
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    box = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    area = ((y1 - y0) * (x1 - x0)).to(torch.float32)
    lam = 1.0 - area / float(h * w)
    box, perm, lam = box.to(x.device), perm.to(x.device), lam.to(x.device)
    out = torch.where(box, x[_full_index(perm, views)], x)
    return MixResult(_keep_format(out, x), perm, lam)


def mix_targets(y: Tensor, perm: Tensor, lam: Tensor, num_classes: int) -> Tensor:
    """Probability targets ``[m, num_classes]`` (float32) of a mixed batch of groups labelled ``y``."""
    one_hot = F.one_hot(y.long(), num_classes).to(torch.float32)
    lam = lam.to(torch.float32)
    return lam * one_hot + (1.0 - lam) * one_hot[perm]
