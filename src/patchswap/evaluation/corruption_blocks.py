"""The building blocks of the corruptions (:mod:`patchswap.evaluation.corruptions`), batched in torch.

Padding by index in the border modes of cv2 and scipy, separable and 2-D filters, pixel gathers and
bilinear sampling, then the pieces several corruptions share: the clipped zoom, ImageMagick's motion
blur, the plasma fractal, glass blur's pixel shuffle, the defocus disk and the procedural frost
texture. Each one is tested against a straightforward reference computation (scipy, loops).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "clipped_zoom",
    "disk_kernel",
    "filter2d",
    "frost_texture",
    "gather_flat",
    "gaussian_blur",
    "glass_shuffle_index",
    "gray",
    "motion_blur_8bit",
    "motion_blur_batch",
    "next_pow2",
    "plasma_fractal",
    "quantize",
    "sample_bilinear",
]


# ---------------------------------------------------------------------------------------------------
# Helpers: padding by index, separable and 2-D filters, pixel gathers, bilinear sampling
# ---------------------------------------------------------------------------------------------------
def _fold_index(i: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map integer coordinates (any range) into ``[0, n)``: edge | reflect101 (cv2) | symmetric (scipy)."""
    if n == 1 or mode == "edge":
        return i.clamp(0, n - 1)
    if mode == "reflect101":  # ... 2 1 | 0 1 2 ... n-1 | n-2 ...
        period = 2 * n - 2
        m = i.remainder(period)
        return torch.where(m < n, m, period - m)
    if mode == "symmetric":  # ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...
        m = i.remainder(2 * n)
        return torch.where(m < n, m, 2 * n - 1 - m)
    raise ValueError(f"unknown border mode {mode!r}")


def _pad(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    """Pad the last two dims of ``x`` by ``ph``/``pw`` on each side (any pad size, any mode)."""
    h, w = x.shape[-2:]
    rows = _fold_index(torch.arange(-ph, h + ph, device=x.device), h, mode)
    cols = _fold_index(torch.arange(-pw, w + pw, device=x.device), w, mode)
    return x.index_select(-2, rows).index_select(-1, cols)


def _gaussian_kernel(sigma: float, truncate: float) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    if sigma <= 0 or radius == 0:
        return torch.ones(1, dtype=torch.float64)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _separable(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of ``x [B, C, H, W]`` with ``kernel`` along H and then W.

    Shifted sums, not conv2d: single-channel convolutions are an order of magnitude slower on CPUs.
    """
    r = (len(kernel) - 1) // 2
    taps = kernel.tolist()
    if r == 0:
        return x * taps[0]
    h, w = x.shape[-2:]
    y = _pad(x, r, 0, mode)
    out = y[..., 0:h, :] * taps[0]
    for i in range(1, len(taps)):
        out.add_(y[..., i : i + h, :], alpha=taps[i])
    y = _pad(out, 0, r, mode)
    out = y[..., :, 0:w] * taps[0]
    for i in range(1, len(taps)):
        out.add_(y[..., :, i : i + w], alpha=taps[i])
    return out


def gaussian_blur(
    x: torch.Tensor, sigma: float, *, mode: str = "edge", truncate: float = 4.0
) -> torch.Tensor:
    """skimage.filters.gaussian / scipy.ndimage.gaussian_filter per channel (mode 'nearest' = edge)."""
    return _separable(x, _gaussian_kernel(sigma, truncate), mode)


def filter2d(x: torch.Tensor, kernel: np.ndarray, mode: str = "reflect101") -> torch.Tensor:
    """cv2.filter2D per channel: correlation with a centred 2-D kernel, as a sum of shifted images."""
    k = np.asarray(kernel, dtype=np.float64)
    rows, cols = np.flatnonzero(np.abs(k).sum(1) > 0), np.flatnonzero(np.abs(k).sum(0) > 0)
    cy, cx = k.shape[0] // 2, k.shape[1] // 2
    ry = max(cy - rows.min(), rows.max() - cy) if rows.size else 0
    rx = max(cx - cols.min(), cols.max() - cx) if cols.size else 0
    k = k[cy - ry : cy + ry + 1, cx - rx : cx + rx + 1]
    h, w = x.shape[-2:]
    y = _pad(x, ry, rx, mode)
    out = torch.zeros_like(x)
    for i, j in zip(*np.nonzero(k), strict=True):
        out.add_(y[..., i : i + h, j : j + w], alpha=float(k[i, j]))
    return out


def gather_flat(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[b, c, p] = x[b, c, index[b, p]]`` over flattened pixels; returns ``x``'s shape."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    return flat.gather(2, index.view(b, 1, -1).expand(b, c, -1)).view(b, c, h, w)


def sample_bilinear(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, mode: str) -> torch.Tensor:
    """Bilinear samples of ``x [B, C, H, W]`` at float coordinates ``ys, xs [B, H, W]`` (border ``mode``)."""
    b, c, h, w = x.shape
    y0, x0 = torch.floor(ys), torch.floor(xs)
    fy, fx = (ys - y0).to(x.dtype), (xs - x0).to(x.dtype)
    y0, x0 = y0.long(), x0.long()
    out = torch.zeros_like(x)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        rows = _fold_index(y0 + dy, h, mode)
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cols = _fold_index(x0 + dx, w, mode)
            out += (wy * wx).unsqueeze(1) * gather_flat(x, (rows * w + cols).view(b, -1))
    return out


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 by truncation (``np.uint8(x * 255)``); the epsilon keeps exact values exact."""
    return (x * 255.0 + 1e-3).floor_().clamp_(0, 255).to(torch.uint8)


def gray(x: torch.Tensor) -> torch.Tensor:
    """Luminance ``[B, 1, H, W]`` (cv2's RGB2GRAY weights); grayscale input passes through."""
    if x.shape[1] == 1:
        return x
    wts = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x[:, :3] * wts).sum(1, keepdim=True)


# ---------------------------------------------------------------------------------------------------
# Building blocks shared by several corruptions
# ---------------------------------------------------------------------------------------------------
def _zoom_matrix(n: int, zoom: float) -> torch.Tensor:
    """``[n, n]`` linear map of make_cifar_c's ``clipped_zoom`` along one axis.

    Crop the central ``ceil(n / zoom)`` pixels, resize them to ``round(crop * zoom)`` with linear
    interpolation (scipy.ndimage.zoom, order 1, corners aligned), keep the central ``n``.
    """
    ch = int(math.ceil(n / zoom))
    top = (n - ch) // 2
    out_n = int(round(ch * zoom))
    trim = (out_n - n) // 2
    m = torch.zeros(n, n, dtype=torch.float64)
    for r in range(n):
        u = (r + trim) * (ch - 1) / (out_n - 1) if out_n > 1 else 0.0
        i0 = min(int(math.floor(u)), ch - 1)
        frac = u - i0
        m[r, top + i0] += 1 - frac
        if frac > 0:
            m[r, top + min(i0 + 1, ch - 1)] += frac
    return m


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    mh, mw = _zoom_matrix(h, zoom).to(x), _zoom_matrix(w, zoom).to(x)
    return mh @ x @ mw.T


def _motion_taps(radius: float, sigma: float, angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageMagick MotionBlurImage: weights ``[T]`` and integer offsets ``[B, T, 2]`` (dy, dx) per angle."""
    width = 2 * int(math.ceil(radius)) + 1
    i = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(i**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    rad = torch.deg2rad(angles.double().cpu())[:, None]
    oy = torch.ceil(i[None] * torch.sin(rad) - 0.5)
    ox = torch.ceil(i[None] * torch.cos(rad) - 0.5)
    return weights, torch.stack([oy, ox], -1).long()


def motion_blur_batch(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """One-sided Gaussian line blur of every image at its own angle (degrees); edges repeated."""
    b, _, h, w = x.shape
    weights, offsets = _motion_taps(radius, sigma, angles)
    offsets = offsets.to(x.device)
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    out = torch.zeros_like(x)
    for t, wt in enumerate(weights.tolist()):
        rows = (ar_h[None] + offsets[:, t, 0:1]).clamp(0, h - 1)  # [B, H]
        cols = (ar_w[None] + offsets[:, t, 1:2]).clamp(0, w - 1)  # [B, W]
        out += wt * gather_flat(x, (rows[:, :, None] * w + cols[:, None, :]).view(b, -1))
    return out


def motion_blur_8bit(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur of an 8-bit image as the original reads it back: truncated to 8 bits.

    Snow's layer goes through ImageMagick and back as an 8-bit image; ImageMagick's result, like
    ``np.uint8`` elsewhere, truncates (``motion_blur`` matches it to 0.001 grey levels that way).
    """
    return quantize(motion_blur_batch(x, radius, sigma, angles).clamp_(0, 1)).to(x.dtype) / 255


def plasma_fractal(batch: int, mapsize: int, wibbledecay: float, gen: torch.Generator) -> torch.Tensor:
    """Diamond-square height maps ``[B, mapsize, mapsize]`` in [0, 1] (make_cifar_c's plasma_fractal)."""
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    maparray = torch.zeros(batch, mapsize, mapsize, dtype=torch.float64)
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(array: torch.Tensor) -> torch.Tensor:
        u = torch.rand(array.shape, generator=gen, dtype=torch.float64) * 2 - 1
        return array / 4 + wibble * (wibble * u)

    while stepsize >= 2:
        half = stepsize // 2
        corner = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corner + torch.roll(corner, -1, 1)
        square = square + torch.roll(square, -1, 2)
        maparray[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(square)
        dr = maparray[:, half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2)
        maparray[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1)
        maparray[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    flat = maparray.view(batch, -1)
    flat = flat - flat.min(1, keepdim=True).values
    flat = flat / flat.max(1, keepdim=True).values.clamp(min=1e-12)
    return flat.view(batch, mapsize, mapsize)


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def glass_shuffle_index(
    batch: int, h: int, w: int, delta: int, iterations: int, gen: torch.Generator
) -> torch.Tensor:
    """Source pixel ``[B, H * W]`` of every position after make_cifar_c's glass-blur loop, batched.

    The loop visits ``(hh, ww)`` for ``hh = H - delta .. delta + 1`` and ``ww = W - delta .. delta + 1``
    (both descending), draws ``dx, dy ~ randint(-delta, delta)`` (upper bound excluded) and runs
    ``x[hh, ww], x[hh + dy, ww + dx] = x[hh + dy, ww + dx], x[hh, ww]``. On an ``[H, W, 3]`` array the
    right-hand side holds *views*, so this copies the neighbour into ``(hh, ww)`` and leaves the
    neighbour unchanged: no swap. We reproduce that (the released CIFAR-10-C was made with it): each
    visited pixel takes the current value of its neighbour, which is the original value unless the
    neighbour was visited earlier in the same pass (possible only for ``delta > 1``); such chains are
    followed with vectorised pointer jumps instead of a per-pixel loop.
    """
    n = h * w
    rows = torch.arange(h - delta, delta, -1)
    cols = torch.arange(w - delta, delta, -1)
    index = torch.arange(n).repeat(batch, 1)
    if rows.numel() == 0 or cols.numel() == 0:
        return index
    hh = rows[:, None].expand(-1, cols.numel()).reshape(-1)
    ww = cols[None, :].expand(rows.numel(), -1).reshape(-1)
    visited = hh * w + ww  # positions in loop order
    order = torch.full((n,), n + 1, dtype=torch.long)  # never visited: after everything
    order[visited] = torch.arange(visited.numel())
    order = order.expand(batch, -1)
    for _ in range(iterations):
        d = torch.randint(-delta, delta, (batch, visited.numel(), 2), generator=gen)  # (dx, dy) per visit
        src = torch.arange(n).repeat(batch, 1)
        src[:, visited] = (hh + d[..., 1]) * w + (ww + d[..., 0])
        res, at = src.clone(), torch.arange(n).expand(batch, -1)
        active = order.gather(1, res) < order.gather(1, at)  # the neighbour was already overwritten
        while bool(active.any()):
            at = torch.where(active, res, at)
            res = torch.where(active, src.gather(1, at), res)
            active = active & (order.gather(1, res) < order.gather(1, at))
        index = index.gather(1, res)
    return index


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c's ``disk``: a normalised aliased disk smoothed by cv2.GaussianBlur (3x3 or 5x5)."""
    if radius <= 8:
        coords, ksize = np.arange(-8, 8 + 1), 3
    else:
        coords, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(coords, coords)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g /= g.sum()
    r = ksize // 2
    padded = np.pad(disk, r, mode="reflect")  # cv2's default border (reflect-101)
    tmp = sum(g[i] * padded[i : i + disk.shape[0], :] for i in range(ksize))
    return sum(g[i] * tmp[:, i : i + disk.shape[1]] for i in range(ksize))


def frost_texture(
    batch: int, h: int, w: int, channels: int, gen: torch.Generator, scale: float = 1.0
) -> torch.Tensor:
    """Procedural frost ``[B, C, H, W]`` in [0, 1]: ice needles on plasma clouds, blue-white to grey.

    A stand-in for the frost photographs of the original, matched to the statistics of their 32x32
    crops (mean about (0.58, 0.68, 0.72) RGB, standard deviation about 0.12 within a crop, overall
    tone varying from crop to crop). Needle lengths are in pixels times ``scale``.
    """
    size = max(h, w)
    clouds = plasma_fractal(batch, next_pow2(size), 2.0, gen)[:, None, :h, :w].float()
    needles = torch.zeros(batch, 1, h, w)
    base = torch.rand(batch, generator=gen) * 360
    for k in range(3):  # three crystal axes 60 degrees apart, jittered per image
        seeds = (torch.rand(batch, 1, h, w, generator=gen) < 0.08).float()
        seeds *= 0.5 + 0.5 * torch.rand(batch, 1, h, w, generator=gen)
        angles = base + 60 * k + (torch.rand(batch, generator=gen) - 0.5) * 30
        for flip in (0.0, 180.0):
            needles = torch.maximum(
                needles, motion_blur_batch(seeds, 3.0 * scale, 1.5 * scale, angles + flip)
            )
    needles = needles / needles.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
    grain = torch.rand(batch, 1, h, w, generator=gen) - 0.5
    tone = 0.5 + 0.35 * torch.rand(batch, 1, 1, 1, generator=gen)
    layer = tone + 0.25 * (clouds - 0.5) + 0.45 * (needles - needles.mean(dim=(2, 3), keepdim=True))
    layer = (layer + 0.08 * grain).clamp(0, 1)
    blue = torch.rand(batch, 1, 1, 1, generator=gen) ** 2  # mostly white-grey, sometimes cyan-blue
    white, cyan = torch.tensor([0.93, 0.97, 1.0]), torch.tensor([0.55, 0.85, 0.97])
    tint = (1 - blue) * white.view(1, 3, 1, 1) + blue * cyan.view(1, 3, 1, 1)
    out = (layer * tint / tint.mean(1, keepdim=True)).clamp(0, 1)
    return gray(out) if channels == 1 else out
