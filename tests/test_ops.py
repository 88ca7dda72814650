"""Invariants of the patch swap op, checked on random shapes, grids and dtypes."""

import math

import pytest
import torch
from helpers import pairs
from hypothesis import given, settings
from hypothesis import strategies as st

from patchswap import (
    PatchSwap,
    apply_cell_mask,
    patch_swap,
    sample_cell_mask,
)
from patchswap.ops import cell_index, grid_for, k_distribution

shapes = st.tuples(
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(2, 17),
    st.integers(2, 17),
    st.integers(1, 4),
    st.integers(1, 4),
)


@settings(max_examples=60, deadline=None)
@given(
    shapes,
    st.sampled_from([torch.float32, torch.uint8, torch.float16, torch.bfloat16]),
    st.integers(0, 10**6),
)
def test_every_pixel_comes_from_the_same_position_of_one_input(shape, dtype, seed):
    n, c, h, w, gh, gw = shape
    if gh * gw < 2 or gh > h or gw > w:
        return
    a, b = pairs(n, c, h, w, dtype, seed)
    a0, b0 = a.clone(), b.clone()
    g = torch.Generator().manual_seed(seed)
    res = patch_swap(a, b, grid=(gh, gw), prob=0.7, generator=g)
    assert torch.equal(a, a0) and torch.equal(b, b0), "inputs must be left untouched"
    from_b = res.a == b
    assert torch.all((res.a == a) | from_b)
    # b' is the mirror image of a': where a' took b's pixel, b' took a's pixel.
    pix = cell_index(h, gh)[:, None], cell_index(w, gw)[None, :]
    mask = res.cell_mask[:, pix[0], pix[1]][:, None].expand_as(a)
    assert torch.equal(res.a, torch.where(mask, b, a))
    assert torch.equal(res.b, torch.where(mask, a, b))
    if dtype in (torch.float32, torch.uint8):
        assert torch.equal(res.a.double() + res.b.double(), a.double() + b.double())


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 10**6))
def test_prob_one_swaps_between_1_and_G_minus_1_cells_and_prob_zero_is_identity(shape, seed):
    n, c, h, w, gh, gw = shape
    if gh * gw < 2 or gh > h or gw > w:
        return
    a, b = pairs(n, c, h, w, seed=seed)
    res = patch_swap(a, b, grid=(gh, gw), prob=1.0, generator=torch.Generator().manual_seed(seed))
    k = res.cell_mask.flatten(1).sum(1)
    assert torch.all((k >= 1) & (k <= gh * gw - 1))
    assert torch.all((res.fraction > 0) & (res.fraction < 1))
    same = patch_swap(a, b, grid=(gh, gw), prob=0.0, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(same.a, a) and torch.equal(same.b, b)
    assert not same.cell_mask.any() and torch.all(same.fraction == 0)


def test_cell_boundaries_are_floor_i_h_over_g_for_sizes_the_grid_does_not_divide():
    for size in range(1, 40):
        for cells in range(1, size + 1):
            idx = cell_index(size, cells)
            bounds = [math.floor(i * size / cells) for i in range(cells + 1)]
            expect = torch.tensor([max(i for i in range(cells) if bounds[i] <= y) for y in range(size)])
            assert torch.equal(idx, expect), (size, cells)


def test_patch_size_in_pixels_gives_cells_at_its_multiples_with_a_smaller_last_cell():
    assert grid_for(32, 32, patch_size=4) == (8, 8)
    assert grid_for(10, 7, patch_size=(4, 3)) == (3, 3)
    assert torch.equal(cell_index(10, 3, patch_size=4), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2]))
    a, b = pairs(4, 3, 10, 7)
    res = patch_swap(a, b, patch_size=(4, 3), prob=1.0, generator=torch.Generator().manual_seed(1))
    assert res.cell_mask.shape == (4, 3, 3)
    # fraction is the pixel area: rows of 4,4,2 and columns of 3,3,1 pixels.
    area = torch.tensor([4.0, 4.0, 2.0])[:, None] * torch.tensor([3.0, 3.0, 1.0])[None, :]
    assert torch.allclose(res.fraction, (res.cell_mask * area).sum((1, 2)) / 70)


def test_seeded_generator_gives_the_same_output_and_different_seeds_differ():
    a, b = pairs(64, 3, 32, 32)
    r1 = patch_swap(a, b, grid=4, prob=0.5, generator=torch.Generator().manual_seed(7))
    r2 = patch_swap(a, b, grid=4, prob=0.5, generator=torch.Generator().manual_seed(7))
    r3 = patch_swap(a, b, grid=4, prob=0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(r1.a, r2.a) and torch.equal(r1.cell_mask, r2.cell_mask)
    assert not torch.equal(r1.cell_mask, r3.cell_mask)


@pytest.mark.parametrize(
    ("k_rule", "kwargs", "grid"),
    [
        ("uniform", {}, (2, 2)),
        ("uniform", {}, (4, 4)),
        ("fixed", {"ratio": 0.25}, (4, 4)),
        ("beta", {"beta": (2.0, 5.0)}, (4, 4)),
        ("beta", {"beta": (1.0, 1.0)}, (3, 3)),
    ],
)
def test_empirical_distribution_of_k_matches_the_rule(k_rule, kwargs, grid):
    n = 40000
    prob = 0.6
    mask = sample_cell_mask(
        n, grid, prob=prob, k_rule=k_rule, generator=torch.Generator().manual_seed(3), **kwargs
    )
    cells = grid[0] * grid[1]
    k = mask.flatten(1).sum(1)
    observed = torch.bincount(k, minlength=cells + 1).double() / n
    expected = k_distribution(cells, k_rule, **kwargs) * prob
    expected[0] += 1 - prob
    # Binomial standard error bound: 5 sigma on each bin.
    sigma = (expected * (1 - expected) / n).sqrt()
    assert torch.all((observed - expected).abs() <= 5 * sigma + 1e-12), (observed, expected)
    # Which cells swap is uniform: every cell is equally likely.
    per_cell = mask.flatten(1).double().mean(0)
    assert torch.allclose(per_cell, per_cell.mean().expand_as(per_cell), atol=0.02)


def test_k_rules_closed_forms():
    assert torch.allclose(
        k_distribution(4, "uniform"), torch.tensor([0, 1 / 3, 1 / 3, 1 / 3, 0], dtype=torch.float64)
    )
    assert torch.equal(
        k_distribution(16, "fixed", ratio=0.5), torch.nn.functional.one_hot(torch.tensor(8), 17).double()
    )
    assert k_distribution(16, "fixed", ratio=0.01)[1] == 1  # clamped to at least one cell
    assert torch.allclose(k_distribution(9, "beta", beta=(1.0, 1.0)), k_distribution(9, "uniform"))
    p = k_distribution(16, "beta", beta=(2.0, 5.0))
    mean_k = (p * torch.arange(17)).sum()
    assert abs(mean_k - (1 + 14 * 2 / 7)) < 1e-9  # 1 + (G - 2) * a / (a + b)


def test_inplace_writes_into_the_inputs():
    a, b = pairs(8, 3, 8, 8)
    expect = patch_swap(a, b, prob=1.0, generator=torch.Generator().manual_seed(0))
    res = patch_swap(a, b, prob=1.0, generator=torch.Generator().manual_seed(0), inplace=True)
    assert res.a is a and res.b is b
    assert torch.equal(a, expect.a) and torch.equal(b, expect.b)


def test_channels_last_layout_and_values_are_preserved():
    a, b = pairs(4, 3, 16, 16)
    cl_a, cl_b = (
        a.contiguous(memory_format=torch.channels_last),
        b.contiguous(memory_format=torch.channels_last),
    )
    ref = patch_swap(a, b, prob=1.0, generator=torch.Generator().manual_seed(0))
    res = patch_swap(cl_a, cl_b, prob=1.0, generator=torch.Generator().manual_seed(0))
    assert res.a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(res.a, ref.a) and torch.equal(res.b, ref.b)


def test_patchswap_class_swaps_an_anchor_partner_batch():
    aug = PatchSwap(grid=(2, 2), prob=1.0)
    x = torch.cat(pairs(6, 3, 8, 8))
    out, res = aug.swap_batch(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out[:6], res.a) and torch.equal(out[6:], res.b)
    assert "grid=(2, 2)" in repr(aug)
    with pytest.raises(ValueError, match="even batch"):
        aug.swap_batch(x[:5])


def test_under_torch_compile_the_op_has_no_graph_break():
    torch._dynamo.reset()
    a, b = pairs(8, 3, 16, 16)
    mask = sample_cell_mask(8, (4, 4), prob=1.0, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(apply_cell_mask, fullgraph=True, backend="eager")
    ca, cb = compiled(a, b, mask)
    ea, eb = apply_cell_mask(a, b, mask)
    assert torch.equal(ca, ea) and torch.equal(cb, eb)
    # The whole op with the global RNG, too.
    whole = torch.compile(
        lambda x, y: patch_swap(x, y, grid=(4, 4), prob=0.5), fullgraph=True, backend="eager"
    )
    res = whole(a, b)
    assert torch.equal(res.a + res.b, a + b)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a, b: patch_swap(a, b[:, :, :4]), "same shape"),
        (lambda a, b: patch_swap(a, b.double()), "same dtype"),
        (lambda a, b: patch_swap(a[:0], b[:0]), "N = 0"),
        (lambda a, b: patch_swap(a[0], b[0]), r"\[N, C, H, W\]"),
        (lambda a, b: patch_swap(a, b, grid=(9, 2)), "finer than the image"),
        (lambda a, b: patch_swap(a, b, grid=1), "at least 2 cells"),
        (lambda a, b: patch_swap(a, b, prob=1.5), r"prob must be in \[0, 1\]"),
        (lambda a, b: patch_swap(a, b, prob=-0.1), r"prob must be in \[0, 1\]"),
        (lambda a, b: patch_swap(a, b, k_rule="gauss"), "k_rule must be one of"),
        (lambda a, b: patch_swap(a, b, k_rule="fixed", ratio=1.0), "ratio must be in"),
        (lambda a, b: patch_swap(a, b, k_rule="beta", beta=(0.0, 1.0)), "beta must be two positive"),
        (lambda a, b: patch_swap(a, b, patch_size=16), "larger than the image"),
        (lambda a, b: patch_swap(a, b, grid=4, patch_size=2), "give grid or patch_size, not both"),
        (lambda a, b: PatchSwap(4, patch_size=2), "give grid or patch_size, not both"),
        (lambda a, b: patch_swap(a, b, grid="2x2"), "grid must be an int or a pair"),
        (lambda a, b: apply_cell_mask(a, b, torch.zeros(3, 2, 2, dtype=torch.bool)), "cell_mask must be"),
    ],
)
def test_bad_input_raises_a_value_error_that_says_what_to_change(call, match):
    a, b = pairs(4, 3, 8, 8)
    with pytest.raises(ValueError, match=match):
        call(a, b)


def test_mismatched_devices_are_reported():
    a, b = pairs(2, 3, 8, 8)
    b_meta = torch.empty_like(b, device="meta")
    with pytest.raises(ValueError, match="same device"):
        patch_swap(a, b_meta)


def test_swap_batch_in_place_rewrites_the_batch():
    x = torch.cat(pairs(4, 3, 8, 8))
    expect, _ = PatchSwap(prob=1.0).swap_batch(x.clone(), generator=torch.Generator().manual_seed(2))
    out, _ = PatchSwap(prob=1.0).swap_batch(x, generator=torch.Generator().manual_seed(2), inplace=True)
    assert out is x and torch.equal(x, expect)
