"""Applying a cell mask: the CPU bitwise path equals the where path, pixel masks follow the cell grid, and
gradients pass through."""

import pytest
import torch
from helpers import pairs

from patchswap.cells import apply_cell_mask, cell_index, grid_for
from patchswap.ops import sample_cell_mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8, torch.int64, torch.float64])
def test_cpu_bitwise_path_equals_the_where_path_used_on_accelerators(dtype):
    from patchswap.cells import _BITS, _pixel_mask, _select_bitwise, _select_where

    a, b = pairs(6, 2, 9, 7, dtype=torch.uint8 if dtype == torch.uint8 else torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    cells = sample_cell_mask(6, (3, 2), prob=0.8, generator=torch.Generator().manual_seed(0))
    pix = _pixel_mask(cells, 9, 7, None)[:, None]
    ones = _pixel_mask(cells.to(_BITS[a.element_size()]).neg_(), 9, 7, None)[:, None]
    wa, wb = _select_where(pix, a, b, False)
    ba, bb = _select_bitwise(ones, a, b, False)
    assert torch.equal(wa, ba) and torch.equal(wb, bb) and ba.dtype == dtype


@pytest.mark.parametrize(("size", "patch"), [(9, 4), (12, 4), (10, 3), (8, 4)])
def test_pixel_mask_matches_cell_index_for_grids_and_patch_sizes(size, patch):
    from patchswap.cells import _pixel_mask

    for grid, ps in [((3, 2), None), (grid_for(size, size, patch_size=patch), (patch, patch))]:
        if grid[0] > size:
            continue
        cells = torch.rand(4, *grid, generator=torch.Generator().manual_seed(size)) > 0.5
        rows = cell_index(size, grid[0], ps[0] if ps else None)
        cols = cell_index(size, grid[1], ps[1] if ps else None)
        expect = cells[:, rows][:, :, cols]
        assert torch.equal(_pixel_mask(cells, size, size, ps), expect), (size, grid, ps)


def test_apply_cell_mask_keeps_the_gradient_of_tensors_that_need_one_on_cpu():
    a, b = pairs(2, 3, 4, 4)
    a.requires_grad_(True)
    cells = torch.tensor([[[True, False], [False, False]], [[False, True], [True, True]]])
    out_a, out_b = apply_cell_mask(a, b, cells)
    (out_a.sum() + 2 * out_b.sum()).backward()
    pix = cells.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None].expand_as(a)
    # a's pixel lands in out_b where swapped (weight 2), in out_a elsewhere (weight 1).
    assert torch.equal(a.grad, torch.where(pix, 2.0, 1.0))
