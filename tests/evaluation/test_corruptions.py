"""The 15 corruptions: invariants on every type and severity, and the HSV brightness shift against
matplotlib (their building blocks are tested in test_corruption_blocks.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchswap.evaluation.corruptions import CORRUPTIONS, SEVERITY_PARAMS, _brightness, corrupt

DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}
# Mean |corrupted - clean| cannot decrease with severity: same random draws and a stronger parameter.
MONOTONE_EXACT = ["gaussian_noise", "impulse_noise", "brightness", "contrast"]
# Stronger parameter at every step, so monotone on natural images though not pixel by pixel.
MONOTONE_TYPICAL = ["shot_noise", "defocus_blur", "motion_blur", "zoom_blur", "fog", "jpeg_compression"]
# Not ordered by construction: pixelate (box grids of 30, 28, 27, 24, 20 pixels alias differently),
# glass_blur (sigma 0.4 at severity 3 vs 0.25 at 4), snow (threshold and zoom vary freely), frost (less
# image and more frost at once), elastic_transform (severity 1 has the largest affine jitter).

SHAPES = [(3, 32, 32), (1, 28, 28), (3, 20, 24)]


@pytest.fixture(scope="module")
def image_sets(make_images) -> dict[tuple[int, int, int], torch.Tensor]:
    return {s: make_images(4, *s, seed=sum(s)) for s in SHAPES}


def _change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def test_the_fifteen_types_and_their_constants():
    assert len(CORRUPTIONS) == 15
    assert all(len(SEVERITY_PARAMS[n]) == 5 for n in CORRUPTIONS)
    assert SEVERITY_PARAMS["gaussian_noise"] == [0.04, 0.06, 0.08, 0.09, 0.10]  # make_cifar_c.py
    assert SEVERITY_PARAMS["jpeg_compression"] == [80, 65, 58, 50, 40]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_severity_keeps_shape_dtype_and_is_seeded(name, image_sets):
    for shape, x in image_sets.items():
        changes = []
        for sev in range(1, 6):
            out = corrupt(x, name, sev, seed=5)
            assert out.shape == x.shape and out.dtype == torch.uint8, (shape, sev)
            assert torch.equal(out, corrupt(x, name, sev, seed=5)), (shape, sev)  # deterministic per seed
            if name not in DETERMINISTIC and shape == (3, 32, 32):
                assert not torch.equal(out, corrupt(x, name, sev, seed=6)), (shape, sev)
            changes.append(_change(out, x))
        assert changes[-1] > 0, shape  # severity 5 always changes the image
        if name in MONOTONE_EXACT or (name in MONOTONE_TYPICAL and shape == (3, 32, 32)):
            assert all(b >= a - 1e-9 for a, b in zip(changes, changes[1:], strict=False)), (shape, changes)


def test_single_images_and_empty_batches(rgb32):
    for name in CORRUPTIONS:
        assert corrupt(rgb32[:1], name, 3).shape == (1, 3, 32, 32)
        assert corrupt(rgb32[:0], name, 3).shape == (0, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(rgb32, "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(rgb32, "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(rgb32.float(), "fog", 1)


def test_gaussian_noise_has_the_right_scale():
    x = torch.full((8, 3, 32, 32), 128, dtype=torch.uint8)  # no clipping near 0.5
    for sev, c in enumerate(SEVERITY_PARAMS["gaussian_noise"], 1):
        d = (corrupt(x, "gaussian_noise", sev).float() - 128) / 255
        assert d.std().item() == pytest.approx(c, rel=0.05)


def test_brightness_is_an_hsv_value_shift():
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    x = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    x[0, :, 0, 0] = 0  # black pixel
    for c in SEVERITY_PARAMS["brightness"]:
        hsv = rgb_to_hsv(x.permute(0, 2, 3, 1).numpy())
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        ref = hsv_to_rgb(hsv)
        assert np.allclose(_brightness(x, c, None, 1.0).permute(0, 2, 3, 1).numpy(), ref, atol=1e-12)
