"""DeviceAugment: batched crop/flip against per-sample references, normalization, seeding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from patchswap.data import DeviceAugment

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


def _batch(n: int = 16, c: int = 3, h: int = 8, w: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    return (x.float() / 255 - mean) / std


def test_no_augmentation_is_plain_normalization() -> None:
    x = _batch()
    out = DeviceAugment(MEAN, STD)(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, _normalize(x), rtol=0, atol=1e-5)
    # float input on the 0..255 scale gives the same result and is not modified in place
    xf = x.float()
    before = xf.clone()
    torch.testing.assert_close(DeviceAugment(MEAN, STD)(xf), out, rtol=0, atol=1e-6)
    assert torch.equal(xf, before)


def test_channels_last_input_gives_same_values() -> None:
    x = _batch()
    aug = DeviceAugment(MEAN, STD, crop_padding=2, flip=True)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x_cl, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert b.is_contiguous(memory_format=torch.channels_last)


def test_crop_matches_per_sample_slicing_reference() -> None:
    p = 3
    x = _batch(n=32)
    aug = DeviceAugment(MEAN, STD, crop_padding=p, flip=True)
    out = aug.crop_flip(x, torch.Generator().manual_seed(11))
    # Reference: draws in the documented order (row offsets, column offsets, flips), then per-sample slices.
    g = torch.Generator().manual_seed(11)
    n, _, h, w = x.shape
    oy = torch.randint(0, 2 * p + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * p + 1, (n,), generator=g)
    flips = torch.randint(0, 2, (n,), generator=g).bool()
    padded = F.pad(x, (p, p, p, p))
    for i in range(n):
        ref = padded[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
        if flips[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref), i
    assert len(set(oy.tolist())) > 1 and len(set(ox.tolist())) > 1 and 0 < int(flips.sum()) < n


def test_every_output_is_some_crop_of_its_input() -> None:
    # Independent of the draw order: search all offsets/flips for each sample.
    p = 2
    x = _batch(n=12, h=6, w=6, seed=5)
    out = DeviceAugment(MEAN, STD, crop_padding=p, flip=True).crop_flip(x, torch.Generator().manual_seed(0))
    padded = F.pad(x, (p, p, p, p))
    for i in range(x.shape[0]):
        candidates = [
            padded[i, :, dy : dy + 6, dx : dx + 6].flip(-1) if f else padded[i, :, dy : dy + 6, dx : dx + 6]
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            for f in (False, True)
        ]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_flip_flips_exactly_the_chosen_samples() -> None:
    x = _batch(n=40)
    out = DeviceAugment(MEAN, STD, flip=True)(x, torch.Generator().manual_seed(4))
    chosen = torch.randint(0, 2, (40,), generator=torch.Generator().manual_seed(4)).bool()
    ref = _normalize(torch.where(chosen[:, None, None, None], x.flip(-1), x))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert 5 < int(chosen.sum()) < 35


def test_padding_is_zero_before_normalization() -> None:
    x = torch.full((64, 3, 4, 4), 255, dtype=torch.uint8)
    out = DeviceAugment(MEAN, STD, crop_padding=4).crop_flip(x, torch.Generator().manual_seed(0))
    # With padding = size, some rows/columns come from the zero border.
    assert (out == 0).any() and (out == 255).any()
    assert set(torch.unique(out).tolist()) <= {0, 255}


def test_same_seed_same_output_different_seed_different() -> None:
    x = _batch()
    aug = DeviceAugment(MEAN, STD, crop_padding=4, flip=True)
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(0)
    assert aug(x).shape == x.shape  # default generator works too


def test_buffers_follow_module_and_errors() -> None:
    aug = DeviceAugment((0.5,), (0.25,))
    assert aug.state_dict() == {}  # non-persistent: checkpoints stay free of data constants
    with pytest.raises(ValueError, match="channels"):
        aug(_batch(c=3))
    with pytest.raises(ValueError, match="std"):
        DeviceAugment((0.5,), (0.0,))
    with pytest.raises(ValueError, match="per channel"):
        DeviceAugment((0.5, 0.5), (0.2,))
