"""Invariants of the patch swap op, checked on random shapes, grids and dtypes."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from patchswap import (
    PatchSwap,
    apply_cell_mask,
    patch_swap,
    patch_swap_boxes,
    patch_swap_targets,
    sample_cell_mask,
)
from patchswap.ops import cell_index, grid_for, k_distribution


def _pairs(n, c, h, w, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        a = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
        b = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    else:
        a = torch.randn(n, c, h, w, generator=g).to(dtype)
        b = torch.randn(n, c, h, w, generator=g).to(dtype)
    return a, b


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
    a, b = _pairs(n, c, h, w, dtype, seed)
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
    a, b = _pairs(n, c, h, w, seed=seed)
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
    a, b = _pairs(4, 3, 10, 7)
    res = patch_swap(a, b, patch_size=(4, 3), prob=1.0, generator=torch.Generator().manual_seed(1))
    assert res.cell_mask.shape == (4, 3, 3)
    # fraction is the pixel area: rows of 4,4,2 and columns of 3,3,1 pixels.
    area = torch.tensor([4.0, 4.0, 2.0])[:, None] * torch.tensor([3.0, 3.0, 1.0])[None, :]
    assert torch.allclose(res.fraction, (res.cell_mask * area).sum((1, 2)) / 70)


def test_seeded_generator_gives_the_same_output_and_different_seeds_differ():
    a, b = _pairs(64, 3, 32, 32)
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
    a, b = _pairs(8, 3, 8, 8)
    expect = patch_swap(a, b, prob=1.0, generator=torch.Generator().manual_seed(0))
    res = patch_swap(a, b, prob=1.0, generator=torch.Generator().manual_seed(0), inplace=True)
    assert res.a is a and res.b is b
    assert torch.equal(a, expect.a) and torch.equal(b, expect.b)


def test_channels_last_layout_and_values_are_preserved():
    a, b = _pairs(4, 3, 16, 16)
    cl_a, cl_b = (
        a.contiguous(memory_format=torch.channels_last),
        b.contiguous(memory_format=torch.channels_last),
    )
    ref = patch_swap(a, b, prob=1.0, generator=torch.Generator().manual_seed(0))
    res = patch_swap(cl_a, cl_b, prob=1.0, generator=torch.Generator().manual_seed(0))
    assert res.a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(res.a, ref.a) and torch.equal(res.b, ref.b)


def test_dense_targets_swap_with_the_same_cells_as_images():
    a, b = _pairs(5, 3, 12, 12)
    ya = torch.randint(0, 5, (5, 12, 12))
    yb = torch.randint(0, 5, (5, 12, 12))
    res = patch_swap(a, b, grid=3, prob=1.0, generator=torch.Generator().manual_seed(0))
    ta, tb = patch_swap_targets(ya, yb, res.cell_mask)
    took_b = (res.a == b).all(1) & (res.a != a).any(1)  # pixels where a' surely came from b
    assert torch.equal(ta[took_b], yb[took_b])
    assert torch.equal(ta, torch.where((res.a == b).all(1) & ((a != b).any(1)), yb, ya))
    assert torch.equal(ta + tb, ya + yb)


def test_patchswap_class_swaps_an_anchor_partner_batch():
    aug = PatchSwap(grid=(2, 2), prob=1.0)
    x = torch.cat(_pairs(6, 3, 8, 8))
    out, res = aug.swap_batch(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out[:6], res.a) and torch.equal(out[6:], res.b)
    assert "grid=(2, 2)" in repr(aug)
    with pytest.raises(ValueError, match="even batch"):
        aug.swap_batch(x[:5])


def test_under_torch_compile_the_op_has_no_graph_break():
    torch._dynamo.reset()
    a, b = _pairs(8, 3, 16, 16)
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
    a, b = _pairs(4, 3, 8, 8)
    with pytest.raises(ValueError, match=match):
        call(a, b)


def test_mismatched_devices_are_reported():
    a, b = _pairs(2, 3, 8, 8)
    b_meta = torch.empty_like(b, device="meta")
    with pytest.raises(ValueError, match="same device"):
        patch_swap(a, b_meta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8, torch.int64, torch.float64])
def test_cpu_bitwise_path_equals_the_where_path_used_on_accelerators(dtype):
    from patchswap.ops import _BITS, _pixel_mask, _select_bitwise, _select_where

    a, b = _pairs(6, 2, 9, 7, dtype=torch.uint8 if dtype == torch.uint8 else torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    cells = sample_cell_mask(6, (3, 2), prob=0.8, generator=torch.Generator().manual_seed(0))
    pix = _pixel_mask(cells, 9, 7, None)[:, None]
    ones = _pixel_mask(cells.to(_BITS[a.element_size()]).neg_(), 9, 7, None)[:, None]
    wa, wb = _select_where(pix, a, b, False)
    ba, bb = _select_bitwise(ones, a, b, False)
    assert torch.equal(wa, ba) and torch.equal(wb, bb) and ba.dtype == dtype


def test_bool_maps_take_the_where_path():
    ya = torch.rand(3, 8, 8) > 0.5
    yb = ~ya
    cells = sample_cell_mask(3, (2, 2), prob=1.0, generator=torch.Generator().manual_seed(0))
    ta, tb = patch_swap_targets(ya, yb, cells)
    assert torch.equal(ta ^ tb, torch.ones_like(ta)) and ta.dtype == torch.bool


@pytest.mark.parametrize(("size", "patch"), [(9, 4), (12, 4), (10, 3), (8, 4)])
def test_pixel_mask_matches_cell_index_for_grids_and_patch_sizes(size, patch):
    from patchswap.ops import _pixel_mask

    for grid, ps in [((3, 2), None), (grid_for(size, size, patch_size=patch), (patch, patch))]:
        if grid[0] > size:
            continue
        cells = torch.rand(4, *grid, generator=torch.Generator().manual_seed(size)) > 0.5
        rows = cell_index(size, grid[0], ps[0] if ps else None)
        cols = cell_index(size, grid[1], ps[1] if ps else None)
        expect = cells[:, rows][:, :, cols]
        assert torch.equal(_pixel_mask(cells, size, size, ps), expect), (size, grid, ps)


def test_swap_batch_in_place_rewrites_the_batch():
    x = torch.cat(_pairs(4, 3, 8, 8))
    expect, _ = PatchSwap(prob=1.0).swap_batch(x.clone(), generator=torch.Generator().manual_seed(2))
    out, _ = PatchSwap(prob=1.0).swap_batch(x, generator=torch.Generator().manual_seed(2), inplace=True)
    assert out is x and torch.equal(x, expect)


def test_apply_cell_mask_keeps_the_gradient_of_tensors_that_need_one_on_cpu():
    a, b = _pairs(2, 3, 4, 4)
    a.requires_grad_(True)
    cells = torch.tensor([[[True, False], [False, False]], [[False, True], [True, True]]])
    out_a, out_b = apply_cell_mask(a, b, cells)
    (out_a.sum() + 2 * out_b.sum()).backward()
    pix = cells.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None].expand_as(a)
    # a's pixel lands in out_b where swapped (weight 2), in out_a elsewhere (weight 1).
    assert torch.equal(a.grad, torch.where(pix, 2.0, 1.0))


# --- boxes ------------------------------------------------------------------------------------

TOP_RIGHT = torch.tensor([[[False, True], [False, False]]])  # 8x8 image, 2x2 grid of 4x4 cells


def _boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def _labels(*values):
    return torch.tensor(values, dtype=torch.int64)


def test_boxes_hand_computed_on_a_2x2_grid():
    boxes_a = _boxes(
        [0, 0, 3, 3],  # in a kept cell: unchanged in a'
        [5, 1, 7, 3],  # inside the swapped cell: leaves a', enters b' whole
        [1, 1, 6, 3],  # 6 of 10 px kept: clipped to [1, 1, 4, 3] in a'; 4/10 in b' -> dropped
        [2, 0, 8, 2],  # 4 of 12 px kept -> dropped from a'; 8/12 in b' -> [4, 0, 8, 2]
        [2, 2, 6, 6],  # L-shaped 12/16 visible: kept, bounding box of the L is the box itself
    )
    boxes_b = _boxes([4, 0, 8, 4], [0, 4, 4, 8])  # fully in the swapped cell / fully in a kept cell
    ba, la, bb, lb = patch_swap_boxes(
        [boxes_a], [_labels(0, 1, 2, 3, 4)], [boxes_b], [_labels(10, 11)], TOP_RIGHT, 8, 8
    )
    assert torch.equal(ba[0], _boxes([0, 0, 3, 3], [1, 1, 4, 3], [2, 2, 6, 6], [4, 0, 8, 4]))
    assert torch.equal(la[0], _labels(0, 2, 4, 10))
    assert torch.equal(bb[0], _boxes([0, 4, 4, 8], [5, 1, 7, 3], [4, 0, 8, 2]))
    assert torch.equal(lb[0], _labels(11, 1, 3))


def test_boxes_min_visible_one_keeps_only_wholly_visible_boxes_and_the_threshold_is_inclusive():
    boxes_a = _boxes([0, 0, 4, 4], [1, 1, 6, 3], [2, 0, 6, 2])  # exact cell / 6 of 10 / exactly half
    labels = _labels(0, 1, 2)
    empty, no_labels = torch.zeros(0, 4), _labels()
    ba, la, _, _ = patch_swap_boxes(
        [boxes_a], [labels], [empty], [no_labels], TOP_RIGHT, 8, 8, min_visible=1.0
    )
    assert torch.equal(ba[0], _boxes([0, 0, 4, 4])) and torch.equal(la[0], _labels(0))
    ba, la, bb, lb = patch_swap_boxes([boxes_a], [labels], [empty], [no_labels], TOP_RIGHT, 8, 8)
    assert torch.equal(la[0], _labels(0, 1, 2)) and torch.equal(ba[0][2], torch.tensor([2.0, 0, 4, 2]))
    assert torch.equal(lb[0], _labels(2)) and torch.equal(bb[0], _boxes([4, 0, 6, 2]))


def test_boxes_of_a_pair_that_did_not_swap_are_unchanged_and_zero_area_boxes_are_dropped():
    boxes_a = _boxes([0.5, 1.25, 7.5, 6.0], [3, 3, 3, 5])  # the second has zero width
    boxes_b = _boxes([1, 1, 2, 2])
    ba, la, bb, lb = patch_swap_boxes(
        [boxes_a], [_labels(0, 1)], [boxes_b], [_labels(5)], torch.zeros(1, 2, 2, dtype=torch.bool), 8, 8
    )
    assert torch.equal(ba[0], boxes_a[:1]) and torch.equal(la[0], _labels(0))
    assert torch.equal(bb[0], boxes_b) and torch.equal(lb[0], _labels(5))


def test_empty_box_lists_give_empty_tensors_of_the_right_shape():
    empty, no_labels = torch.zeros(0, 4), _labels()
    ba, la, bb, lb = patch_swap_boxes(
        [empty] * 2, [no_labels] * 2, [empty] * 2, [no_labels] * 2, TOP_RIGHT.repeat(2, 1, 1), 8, 8
    )
    for boxes, labels in zip(ba + bb, la + lb, strict=True):
        assert boxes.shape == (0, 4) and labels.shape == (0,) and labels.dtype == torch.int64
    ba, la, bb, lb = patch_swap_boxes(
        [_boxes([4, 0, 8, 4])], [_labels(7)], [empty], [no_labels], TOP_RIGHT, 8, 8
    )
    assert (
        ba[0].shape == (0, 4) and torch.equal(bb[0], _boxes([4, 0, 8, 4])) and torch.equal(lb[0], _labels(7))
    )


def _random_boxes(n, h, w, g):
    x = torch.sort(torch.randint(0, w + 1, (n, 2), generator=g), dim=1).values
    y = torch.sort(torch.randint(0, h + 1, (n, 2), generator=g), dim=1).values
    x[:, 1] = torch.maximum(x[:, 1], x[:, 0] + 1).clamp(max=w)
    x[:, 0] = torch.minimum(x[:, 0], x[:, 1] - 1)
    y[:, 1] = torch.maximum(y[:, 1], y[:, 0] + 1).clamp(max=h)
    y[:, 0] = torch.minimum(y[:, 0], y[:, 1] - 1)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1).float()


def _paint(boxes, h, w):
    canvas = torch.zeros(len(boxes), h, w)
    for j, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        canvas[j, y1:y2, x1:x2] = 1.0
    return canvas


def _expected_from_canvas(view, boxes, min_visible):
    """Boxes whose painted rectangle keeps >= min_visible of its pixels in ``view``, as bounding boxes."""
    out, kept = [], []
    for j, box in enumerate(boxes.long().tolist()):
        area = (box[2] - box[0]) * (box[3] - box[1])
        ys, xs = torch.nonzero(view[j], as_tuple=True)
        if len(ys) and len(ys) >= min_visible * area:
            out.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
            kept.append(j)
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4), kept


@pytest.mark.parametrize(
    ("h", "w", "grid", "patch_size", "min_visible"),
    [
        (8, 8, (2, 2), None, 0.5),
        (7, 5, (3, 2), None, 0.3),
        (10, 7, None, (4, 3), 1.0),
        (9, 11, (3, 4), None, 0.7),
    ],
)
def test_boxes_agree_with_patch_swap_on_painted_canvases(h, w, grid, patch_size, min_visible):
    g = torch.Generator().manual_seed(h * w)
    n, na, nb = 4, 3, 2
    boxes_a = [_random_boxes(na, h, w, g) for _ in range(n)]
    boxes_b = [_random_boxes(nb, h, w, g) for _ in range(n)]
    labels_a = [torch.arange(na) for _ in range(n)]
    labels_b = [100 + torch.arange(nb) for _ in range(n)]
    # Channels 0..na-1 hold a's boxes on canvas a, channels na.. hold b's boxes on canvas b.
    canvas_a = torch.stack([torch.cat([_paint(bx, h, w), torch.zeros(nb, h, w)]) for bx in boxes_a])
    canvas_b = torch.stack([torch.cat([torch.zeros(na, h, w), _paint(bx, h, w)]) for bx in boxes_b])
    kwargs = {"patch_size": patch_size} if patch_size else {"grid": grid}
    res = patch_swap(canvas_a, canvas_b, prob=0.9, generator=g, **kwargs)
    ba, la, bb, lb = patch_swap_boxes(
        boxes_a,
        labels_a,
        boxes_b,
        labels_b,
        res.cell_mask,
        h,
        w,
        patch_size=patch_size,
        min_visible=min_visible,
    )
    for i in range(n):
        own_a, keep_aa = _expected_from_canvas(res.a[i, :na], boxes_a[i], min_visible)
        in_a, keep_ba = _expected_from_canvas(res.a[i, na:], boxes_b[i], min_visible)
        own_b, keep_bb = _expected_from_canvas(res.b[i, na:], boxes_b[i], min_visible)
        in_b, keep_ab = _expected_from_canvas(res.b[i, :na], boxes_a[i], min_visible)
        assert torch.equal(ba[i], torch.cat([own_a, in_a])), i
        assert torch.equal(la[i], torch.cat([labels_a[i][keep_aa], labels_b[i][keep_ba]])), i
        assert torch.equal(bb[i], torch.cat([own_b, in_b])), i
        assert torch.equal(lb[i], torch.cat([labels_b[i][keep_bb], labels_a[i][keep_ab]])), i


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"boxes_a": []}, "one entry per pair"),
        ({"labels_b": [_labels(1), _labels(2)]}, "one entry per pair"),
        ({"boxes_a": [torch.zeros(1, 3)]}, r"boxes_a\[0\] must be a float tensor \[n, 4\]"),
        ({"boxes_b": [torch.zeros(1, 4, dtype=torch.int64)]}, r"boxes_b\[0\] must be a float tensor"),
        ({"labels_a": [_labels(1, 2)]}, r"labels_a\[0\] must be a tensor \[1\]"),
        ({"cell_mask": torch.zeros(2, 2, dtype=torch.bool)}, r"cell_mask must be a tensor \[N, rows, cols\]"),
        ({"min_visible": 0.0}, r"min_visible must be in \(0, 1\]"),
        ({"min_visible": 1.5}, r"min_visible must be in \(0, 1\]"),
        ({"patch_size": 3}, "patch_size"),
        ({"height": 0}, "positive ints"),
        ({"boxes_b": [torch.zeros(1, 4, dtype=torch.float64)]}, "share dtype and device"),
    ],
)
def test_boxes_bad_input_raises_a_clear_error(change, match):
    args = {
        "boxes_a": [_boxes([0, 0, 2, 2])],
        "labels_a": [_labels(1)],
        "boxes_b": [_boxes([1, 1, 3, 3])],
        "labels_b": [_labels(2)],
        "cell_mask": TOP_RIGHT,
        "height": 8,
        "width": 8,
    } | change
    kwargs = {k: args.pop(k) for k in ("patch_size", "min_visible") if k in args}
    with pytest.raises(ValueError, match=match):
        patch_swap_boxes(*args.values(), **kwargs)
