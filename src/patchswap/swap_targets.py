"""The swap's companions for targets: label maps and detection boxes follow the cells of a swap.

:func:`patch_swap_targets` swaps dense label maps with the cell mask of a :class:`~patchswap.ops.SwapResult`;
:func:`patch_swap_boxes` gives each swapped view the boxes it actually shows. Pure tensor code (torch only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from patchswap.cells import apply_cell_mask, as_pair, cell_edges, check_pair, grid_for

__all__ = ["patch_swap_boxes", "patch_swap_targets"]


def patch_swap_targets(
    t_a: Tensor,
    t_b: Tensor,
    cell_mask: Tensor,
    *,
    patch_size: int | tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Swap dense targets (``[N, H, W]`` label maps) with the cells of a :class:`SwapResult`.

    Pass the same ``patch_size`` as to :func:`patch_swap` (if any) so cells line up.
    """
    check_pair(t_a, t_b, ("t_a", "t_b"), 3)
    return apply_cell_mask(t_a, t_b, cell_mask, patch_size=patch_size)


def _visible_boxes(
    boxes: Tensor, row_edges: Tensor, col_edges: Tensor, shown: list[Tensor], min_visible: float
) -> list[tuple[Tensor, Tensor]]:
    """For each ``[rows, cols]`` bool map in ``shown`` (cells where this image is visible): which
    boxes keep at least ``min_visible`` of their in-image area there, and their visible bounding boxes.

    Vectorised over boxes x cells: ``[n, rows, cols]`` intersections, no loop over boxes or cells.
    """
    x1, y1, x2, y2 = boxes.unbind(1)
    # Each box's intersection with each column band and row band: [n, cols] and [n, rows].
    lo_x = torch.maximum(x1[:, None], col_edges[None, :-1])
    hi_x = torch.minimum(x2[:, None], col_edges[None, 1:])
    lo_y = torch.maximum(y1[:, None], row_edges[None, :-1])
    hi_y = torch.minimum(y2[:, None], row_edges[None, 1:])
    area = (hi_y - lo_y).clamp(min=0)[:, :, None] * (hi_x - lo_x).clamp(min=0)[:, None, :]
    total = area.sum(dim=(1, 2))
    inf = torch.tensor(float("inf"), dtype=boxes.dtype, device=boxes.device)
    out = []
    for cells in shown:
        seen = (area > 0) & cells[None]
        visible = torch.where(seen, area, torch.zeros_like(area)).sum(dim=(1, 2))
        # Zero-area boxes (or boxes wholly outside the image) are never kept: nothing to see.
        keep = (total > 0) & (visible >= min_visible * total)
        any_row, any_col = seen.any(dim=2), seen.any(dim=1)  # [n, rows], [n, cols]
        nx1 = torch.where(any_col, lo_x, inf).amin(dim=1)
        nx2 = torch.where(any_col, hi_x, -inf).amax(dim=1)
        ny1 = torch.where(any_row, lo_y, inf).amin(dim=1)
        ny2 = torch.where(any_row, hi_y, -inf).amax(dim=1)
        out.append((keep, torch.stack([nx1, ny1, nx2, ny2], dim=1)[keep]))
    return out


def _check_boxes(boxes: list[Tensor], labels: list[Tensor], name: str, n: int) -> None:
    if not isinstance(boxes, (list, tuple)) or not isinstance(labels, (list, tuple)):
        raise ValueError(f"boxes_{name} and labels_{name} must be lists of per-image tensors")
    if len(boxes) != n or len(labels) != n:
        raise ValueError(
            f"boxes_{name} and labels_{name} must have one entry per pair (N = {n} from cell_mask), "
            f"got {len(boxes)} and {len(labels)}"
        )
    for i, (bx, lb) in enumerate(zip(boxes, labels, strict=True)):
        if not isinstance(bx, Tensor) or bx.dim() != 2 or bx.shape[1] != 4 or not bx.is_floating_point():
            shape = tuple(bx.shape) if isinstance(bx, Tensor) else type(bx).__name__
            raise ValueError(
                f"boxes_{name}[{i}] must be a float tensor [n, 4] (x1, y1, x2, y2 in pixels), got {shape}"
            )
        if not isinstance(lb, Tensor) or lb.dim() != 1 or lb.shape[0] != bx.shape[0]:
            shape = tuple(lb.shape) if isinstance(lb, Tensor) else type(lb).__name__
            raise ValueError(
                f"labels_{name}[{i}] must be a tensor [{bx.shape[0]}] (one label per box), got {shape}"
            )
        if lb.device != bx.device:
            raise ValueError(
                f"labels_{name}[{i}] and boxes_{name}[{i}] must be on the same device, "
                f"got {lb.device} and {bx.device}"
            )


def patch_swap_boxes(
    boxes_a: list[Tensor],
    labels_a: list[Tensor],
    boxes_b: list[Tensor],
    labels_b: list[Tensor],
    cell_mask: Tensor,
    height: int,
    width: int,
    *,
    patch_size: int | tuple[int, int] | None = None,
    min_visible: float = 0.5,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """Swap detection targets with the cells of a :class:`SwapResult`: ``(boxes_a', labels_a',
    boxes_b', labels_b')``.

    Boxes are float ``[n, 4]`` ``(x1, y1, x2, y2)`` in pixels of the ``height x width`` image
    (x2, y2 exclusive), labels ``[n]``. As in :func:`patch_swap`, view a' shows b's content in
    the cells where ``cell_mask[i]`` is True and a's content elsewhere (b' the mirror). A box of
    a stays in a' when at least ``min_visible`` of its area (inside the image) lies in cells that
    still show a, and becomes the bounding box of that visible part; a box of b enters a' by the
    same rule over the swapped cells; likewise for b'. a' lists a's surviving boxes, then b's.

    Why: torchvision-style detectors are trained to fire on every listed box, so the target must
    list what the swapped image actually shows. Keeping a box that was mostly swapped away would
    teach the detector to fire on the partner's content in its place; a kept box is shrunk to
    what is visible so it does not cover foreign cells more than needed. Zero-area boxes are
    dropped. Pass the same ``patch_size`` as to :func:`patch_swap` (if any) so cells line up.
    """
    if not isinstance(cell_mask, Tensor) or cell_mask.dim() != 3:
        shape = tuple(cell_mask.shape) if isinstance(cell_mask, Tensor) else type(cell_mask).__name__
        raise ValueError(f"cell_mask must be a tensor [N, rows, cols], got {shape}")
    n, gh, gw = cell_mask.shape
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"height and width must be positive ints, got {height!r} and {width!r}")
    if not 0.0 < min_visible <= 1.0:
        raise ValueError(f"min_visible must be in (0, 1], got {min_visible!r}")
    ps = as_pair(patch_size, "patch_size") if patch_size is not None else None
    if ps is not None:
        expect = grid_for(height, width, patch_size=ps)
        if (gh, gw) != expect:
            raise ValueError(
                f"cell_mask has a {gh}x{gw} grid but patch_size {ps} on a {height}x{width} image gives "
                f"{expect[0]}x{expect[1]}: pass the patch_size (and image size) used for the swap"
            )
    elif gh > height or gw > width:
        raise ValueError(f"cell_mask's {gh}x{gw} grid is finer than the {height}x{width} image")
    _check_boxes(boxes_a, labels_a, "a", n)
    _check_boxes(boxes_b, labels_b, "b", n)
    out_ba: list[Tensor] = []
    out_la: list[Tensor] = []
    out_bb: list[Tensor] = []
    out_lb: list[Tensor] = []
    for i in range(n):  # boxes are ragged; everything inside is vectorised over boxes x cells
        bxa, bxb = boxes_a[i], boxes_b[i]
        if bxa.dtype != bxb.dtype or bxa.device != bxb.device:
            raise ValueError(
                f"boxes_a[{i}] and boxes_b[{i}] must share dtype and device, got "
                f"{bxa.dtype}/{bxa.device} and {bxb.dtype}/{bxb.device}"
            )
        dev, dt = bxa.device, bxa.dtype
        rows = cell_edges(height, gh, ps[0] if ps else None, dev, dt)
        cols = cell_edges(width, gw, ps[1] if ps else None, dev, dt)
        swapped = cell_mask[i].to(device=dev, dtype=torch.bool)
        (keep_aa, a_in_a), (keep_ab, a_in_b) = _visible_boxes(
            bxa, rows, cols, [~swapped, swapped], min_visible
        )
        (keep_bb, b_in_b), (keep_ba, b_in_a) = _visible_boxes(
            bxb, rows, cols, [~swapped, swapped], min_visible
        )
        out_ba.append(torch.cat([a_in_a, b_in_a]))
        out_la.append(torch.cat([labels_a[i][keep_aa], labels_b[i][keep_ba]]))
        out_bb.append(torch.cat([b_in_b, a_in_b]))
        out_lb.append(torch.cat([labels_b[i][keep_bb], labels_a[i][keep_ab]]))
    return out_ba, out_la, out_bb, out_lb
