"""The corruptions' building blocks against straightforward reference computations (scipy, loops) that
follow make_cifar_c.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from patchswap.evaluation.corruption_blocks import (
    clipped_zoom,
    disk_kernel,
    filter2d,
    gaussian_blur,
    glass_shuffle_index,
    motion_blur_8bit,
    motion_blur_batch,
    plasma_fractal,
    sample_bilinear,
)
from patchswap.evaluation.corruptions import SEVERITY_PARAMS


def test_gaussian_blur_matches_scipy():
    x = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    for sigma in (0.05, 0.4, 1.3):
        ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
        assert np.allclose(gaussian_blur(x, sigma).numpy(), ref, atol=1e-12)
        ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3.0)
        assert np.allclose(gaussian_blur(x, sigma, mode="symmetric", truncate=3.0).numpy(), ref, atol=1e-12)


def test_defocus_filter_matches_scipy_correlate():
    x = torch.rand(1, 1, 9, 12, dtype=torch.float64)
    for radius, alias in SEVERITY_PARAMS["defocus_blur"]:
        k = disk_kernel(radius, alias)
        assert k.shape == (17, 17) and k.sum() == pytest.approx(1.0)
        ref = ndimage.correlate(x[0, 0].numpy(), k, mode="mirror")  # mirror = cv2's reflect-101
        assert np.allclose(filter2d(x, k)[0, 0].numpy(), ref, atol=1e-12)


def _referenceclipped_zoom(img: np.ndarray, z: float) -> np.ndarray:
    """make_cifar_c's clipped_zoom on an [H, W] array: centre crop, scipy zoom (order 1), centre trim."""
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    out = ndimage.zoom(img[top : top + ch, top : top + ch], z, order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim : trim + h, trim : trim + h]


def test_clipped_zoom_matches_scipy_zoom():
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    for z in (1.0, 1.03, 1.11, 1.25, 1.75, 2.25):
        ref = _referenceclipped_zoom(x[0, 0].numpy(), z)
        assert np.allclose(clipped_zoom(x, z)[0, 0].numpy(), ref, atol=1e-10), z


def test_glass_shuffle_reproduces_the_original_loop():
    """The loop of make_cifar_c on an [H, W, 3] array, where the tuple swap copies (numpy views)."""
    for h, w, delta, iterations in [(8, 8, 1, 1), (12, 9, 1, 2), (16, 16, 2, 2), (7, 13, 3, 1)]:
        index = glass_shuffle_index(2, h, w, delta, iterations, torch.Generator().manual_seed(3))
        gen = torch.Generator().manual_seed(3)
        ref = np.tile(np.arange(h * w), (2, 1))
        for _ in range(iterations):
            draws = torch.randint(
                -delta, delta, (2, (h - 2 * delta) * (w - 2 * delta), 2), generator=gen
            ).numpy()
            for b in range(2):
                img = np.stack([ref[b].reshape(h, w)] * 3, -1)
                k = 0
                for hh in range(h - delta, delta, -1):
                    for ww in range(w - delta, delta, -1):
                        dx, dy = draws[b, k]
                        k += 1
                        img[hh, ww], img[hh + dy, ww + dx] = img[hh + dy, ww + dx], img[hh, ww]
                ref[b] = img[..., 0].ravel()
        assert np.array_equal(index.numpy(), ref), (h, w, delta, iterations)


def test_motion_blur_matches_a_per_pixel_loop():
    x = torch.rand(2, 1, 10, 12, dtype=torch.float64)
    angles = torch.tensor([-30.0, 100.0])
    out = motion_blur_batch(x, 4, 1.5, angles)
    width = 9
    wts = np.exp(-(np.arange(width) ** 2) / (2 * 1.5**2))
    wts /= wts.sum()
    for b, a in enumerate(angles.tolist()):
        ref = np.zeros((10, 12))
        for i in range(width):
            oy = int(np.ceil(i * np.sin(np.deg2rad(a)) - 0.5))
            ox = int(np.ceil(i * np.cos(np.deg2rad(a)) - 0.5))
            for r in range(10):
                for c in range(12):
                    ref[r, c] += wts[i] * x[b, 0, min(max(r + oy, 0), 9), min(max(c + ox, 0), 11)].item()
        assert np.allclose(out[b, 0].numpy(), ref, atol=1e-12)


def test_snow_layer_is_truncated_to_8_bits_as_imagemagick_does():
    """One white pixel blurred along angle 0 with radius 1, sigma 1: taps i = 0, 1, 2 land i columns to
    the left with weights exp(-i^2 / 2) / (1 + e^-0.5 + e^-2) = 0.5741, 0.3482, 0.0777, i.e. 146.39,
    88.79 and 19.81 grey levels: ImageMagick writes 146, 88, 19 (truncated; rounding gave 146, 89, 20)."""
    layer = torch.zeros(1, 1, 3, 8)
    layer[0, 0, 1, 5] = 1.0
    out = motion_blur_8bit(layer, 1, 1, torch.tensor([0.0]))
    expected = torch.zeros(1, 1, 3, 8)
    expected[0, 0, 1, 3:6] = torch.tensor([19.0, 88.0, 146.0])
    assert torch.equal(out * 255, expected)
    assert out.dtype == layer.dtype
    # Exact grey levels stay exact: a flat layer of 0.4 = 102/255 is 102, not 101.
    flat = motion_blur_8bit(torch.full((1, 1, 4, 4), 102 / 255), 3, 2, torch.tensor([-100.0]))
    assert torch.equal(flat * 255, torch.full((1, 1, 4, 4), 102.0))


def test_bilinear_sampling_matches_map_coordinates():
    x = torch.rand(1, 1, 9, 11, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    ys = torch.rand(1, 9, 11, generator=gen, dtype=torch.float64) * 14 - 2.5
    xs = torch.rand(1, 9, 11, generator=gen, dtype=torch.float64) * 16 - 2.5
    ref = ndimage.map_coordinates(x[0, 0].numpy(), [ys[0].numpy(), xs[0].numpy()], order=1, mode="reflect")
    assert np.allclose(sample_bilinear(x, ys, xs, "symmetric")[0, 0].numpy(), ref, atol=1e-12)
    ref = ndimage.map_coordinates(x[0, 0].numpy(), [ys[0].numpy(), xs[0].numpy()], order=1, mode="mirror")
    assert np.allclose(sample_bilinear(x, ys, xs, "reflect101")[0, 0].numpy(), ref, atol=1e-12)


def test_plasma_fractal_is_normalised_and_seeded():
    a = plasma_fractal(3, 32, 2.0, torch.Generator().manual_seed(0))
    b = plasma_fractal(3, 32, 2.0, torch.Generator().manual_seed(0))
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    assert torch.allclose(a.amin((1, 2)), torch.zeros(3, dtype=a.dtype))
    assert torch.allclose(a.amax((1, 2)), torch.ones(3, dtype=a.dtype))
    with pytest.raises(ValueError, match="power of two"):
        plasma_fractal(1, 24, 2.0, torch.Generator())
