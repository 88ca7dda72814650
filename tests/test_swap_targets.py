"""Targets follow a swap: label maps take the same cells as the images, boxes what each view shows."""

import pytest
import torch
from helpers import pairs

from patchswap import patch_swap, patch_swap_boxes, patch_swap_targets, sample_cell_mask


def test_dense_targets_swap_with_the_same_cells_as_images():
    a, b = pairs(5, 3, 12, 12)
    ya = torch.randint(0, 5, (5, 12, 12))
    yb = torch.randint(0, 5, (5, 12, 12))
    res = patch_swap(a, b, grid=3, prob=1.0, generator=torch.Generator().manual_seed(0))
    ta, tb = patch_swap_targets(ya, yb, res.cell_mask)
    took_b = (res.a == b).all(1) & (res.a != a).any(1)  # pixels where a' surely came from b
    assert torch.equal(ta[took_b], yb[took_b])
    assert torch.equal(ta, torch.where((res.a == b).all(1) & ((a != b).any(1)), yb, ya))
    assert torch.equal(ta + tb, ya + yb)


def test_bool_maps_take_the_where_path():
    ya = torch.rand(3, 8, 8) > 0.5
    yb = ~ya
    cells = sample_cell_mask(3, (2, 2), prob=1.0, generator=torch.Generator().manual_seed(0))
    ta, tb = patch_swap_targets(ya, yb, cells)
    assert torch.equal(ta ^ tb, torch.ones_like(ta)) and ta.dtype == torch.bool


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
