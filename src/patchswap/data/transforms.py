"""Batch transforms that run on the training device, plus the per-item transforms of image folders.

Batches reach the device as uint8 ``[N, C, H, W]`` (4x less host-to-device traffic than float32); the
:class:`DeviceAugment` module then crops/flips the whole batch at once and normalizes to float32. No
Python loop over samples, and the same code runs on CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DeviceAugment"]


class DeviceAugment(nn.Module):
    """Batched random crop (zero padding) + horizontal flip + normalization, on ``x``'s device.

    ``forward(x)`` takes uint8 (or float on the 0..255 scale) ``[N, C, H, W]`` and returns float32
    ``(x / 255 - mean) / std`` after, when enabled, a random crop of the ``crop_padding``-padded image
    back to ``H x W`` (per-sample offsets) and a horizontal flip of each sample with probability 0.5.
    Random numbers come from ``generator`` (drawn on its device) or from the default generator of
    ``x``'s device, so a seeded generator reproduces the exact same batch. Augmentation is applied
    whenever configured, regardless of ``self.training``: use a second instance without crop/flip for
    evaluation.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        crop_padding: int = 0,
        flip: bool = False,
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.shape != std_t.shape or mean_t.numel() == 0:
            raise ValueError(f"mean and std need one value per channel, got {list(mean)} and {list(std)}")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {list(std)}")
        if int(crop_padding) < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    @property
    def augments(self) -> bool:
        """Whether this transform is random (crop or flip enabled)."""
        return self.crop_padding > 0 or self.flip

    def extra_repr(self) -> str:
        mean = [round(v, 4) for v in self.mean.flatten().tolist()]
        std = [round(v, 4) for v in self.std.flatten().tolist()]
        return f"mean={mean}, std={std}, crop_padding={self.crop_padding}, flip={self.flip}"

    def _draw(
        self, n: int, high: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        rng_device = generator.device if generator is not None else device
        out = torch.randint(0, high, (n,), generator=generator, device=rng_device)
        return out.to(device)

    def crop_flip(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random crop + flip only (same dtype as ``x``); one gather for the whole batch."""
        if not self.augments:
            return x
        n, _, h, w = x.shape
        p = self.crop_padding
        dev = x.device
        # Draw order is fixed (rows, columns, flips) so a seeded generator reproduces a batch.
        oy = self._draw(n, 2 * p + 1, generator, dev) if p else torch.zeros(n, dtype=torch.long, device=dev)
        ox = self._draw(n, 2 * p + 1, generator, dev) if p else torch.zeros(n, dtype=torch.long, device=dev)
        flips = self._draw(n, 2, generator, dev).bool() if self.flip else None
        src = F.pad(x, (p, p, p, p)) if p else x
        ar_h = torch.arange(h, device=dev)
        ar_w = torch.arange(w, device=dev)
        rows = oy[:, None] + ar_h[None, :]  # [N, H]
        cols = ox[:, None] + ar_w[None, :]  # [N, W]
        if flips is not None:
            cols = torch.where(flips[:, None], ox[:, None] + (w - 1 - ar_w)[None, :], cols)
        batch = torch.arange(n, device=dev)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        return src[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"DeviceAugment expects a batch [N, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"batch has {x.shape[1]} channels but mean/std have {self.mean.shape[1]}; build the "
                "augment with one mean/std value per channel"
            )
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = self.crop_flip(x, generator)
        mean = self.mean.to(x.device)
        std = self.std.to(x.device)
        # copy=True: a float32 input is never modified in place by the normalization below.
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        out = x.to(torch.float32, copy=True, memory_format=fmt)
        # (x / 255 - mean) / std in exactly this order: the evaluation suite's PixelModel (attacks on
        # [0, 1] images) computes the same arithmetic and matches these logits bit for bit, and every
        # committed study was trained with it. One fused scale and shift would differ in the last bit.
        return out.div_(255.0).sub_(mean).div_(std)
