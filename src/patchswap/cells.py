"""The cell grid of a swap and applying a cell mask: pure tensor code (torch only).

An image of ``H x W`` pixels is cut into a ``rows x cols`` grid (:func:`grid_for`, from a grid or a
patch size in pixels); :func:`apply_cell_mask` exchanges the masked cells between two batches at the
same positions, deterministic and loop-free, for images, label maps and features alike. The swap op
(:mod:`patchswap.ops`) samples the mask; its target companions (:mod:`patchswap.swap_targets`) apply it
to label maps and boxes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["apply_cell_mask", "as_pair", "cell_edges", "cell_index", "check_pair", "grid_for"]


def as_pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """``(rows, cols)`` of an int or a pair of ints; ``name`` is the argument an error names."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints (rows, cols), got {value!r}")


def grid_for(
    height: int,
    width: int,
    grid: int | tuple[int, int] | None = (2, 2),
    patch_size: int | tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The (rows, cols) cell grid for an image, from either a grid or a patch size in pixels.

    With ``patch_size`` the cells are ``patch_size`` pixels with boundaries at its multiples; a
    remainder that the patch size does not divide forms a last, smaller row or column of cells.
    """
    if patch_size is None and grid is None:
        raise ValueError("give either grid=(rows, cols) or patch_size=pixels")
    name, value = ("patch_size", patch_size) if patch_size is not None else ("grid", grid)
    rows, cols = as_pair(value, name)
    if rows < 1 or cols < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if rows > height or cols > width:
        raise ValueError(_TOO_COARSE_AN_IMAGE[name].format(size=(rows, cols), height=height, width=width))
    gh, gw = (math.ceil(height / rows), math.ceil(width / cols)) if patch_size is not None else (rows, cols)
    if gh * gw < 2:
        raise ValueError(
            f"the grid has {gh * gw} cell; a swap needs at least 2 cells (e.g. grid=(2, 2)) "
            "so that each view keeps part of its own image"
        )
    return gh, gw


# A grid or patch size the image cannot hold: what to change.
_TOO_COARSE_AN_IMAGE = {
    "patch_size": "patch_size {size} is larger than the image ({height}x{width}); use a smaller patch_size",
    "grid": (
        "grid {size} is finer than the image ({height}x{width}): every cell needs at least one pixel; "
        "use a coarser grid"
    ),
}


def cell_index(
    size: int, cells: int, patch_size: int | None = None, device: torch.device | None = None
) -> Tensor:
    """For each pixel row (or column) along an axis of ``size`` pixels, the index of its cell.

    Grid cells have boundaries at ``floor(i * size / cells)``, so sizes the grid does not divide
    work; with a patch size the boundaries are at multiples of it.
    """
    pos = torch.arange(size, device=device)
    if patch_size is not None:
        return torch.div(pos, patch_size, rounding_mode="floor")
    # Largest i with floor(i * size / cells) <= pos  <=>  i = ceil((pos + 1) * cells / size) - 1.
    return torch.div((pos + 1) * cells + size - 1, size, rounding_mode="floor") - 1


def cell_edges(
    size: int, cells: int, patch_size: int | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """The ``cells + 1`` pixel boundaries along an axis, matching :func:`cell_index`."""
    i = torch.arange(cells + 1, device=device)
    if patch_size is not None:
        edges = (i * patch_size).clamp(max=size)
    else:
        edges = torch.div(i * size, cells, rounding_mode="floor")
    return edges.to(dtype)


def check_pair(x_a: Tensor, x_b: Tensor, names: tuple[str, str], min_dim: int) -> None:
    """A ``ValueError`` that says what to change unless ``x_a`` and ``x_b`` are a batch of pairs."""
    na, nb = names
    if not isinstance(x_a, Tensor) or not isinstance(x_b, Tensor):
        raise ValueError(f"{na} and {nb} must be tensors, got {type(x_a).__name__} and {type(x_b).__name__}")
    if x_a.shape != x_b.shape:
        raise ValueError(
            f"{na} and {nb} must have the same shape (row i of each is a same-class pair), "
            f"got {tuple(x_a.shape)} and {tuple(x_b.shape)}"
        )
    if x_a.dtype != x_b.dtype:
        raise ValueError(f"{na} and {nb} must have the same dtype, got {x_a.dtype} and {x_b.dtype}")
    if x_a.device != x_b.device:
        raise ValueError(f"{na} and {nb} must be on the same device, got {x_a.device} and {x_b.device}")
    if x_a.dim() < min_dim:
        layout = "[N, C, H, W]" if min_dim == 4 else "[N, H, W]"
        raise ValueError(f"{na} must be a batch {layout}, got shape {tuple(x_a.shape)}")
    if x_a.shape[0] == 0:
        raise ValueError(f"{na} and {nb} are empty (N = 0): pass at least one pair")


def _pixel_mask(cell_mask: Tensor, height: int, width: int, patch_size: tuple[int, int] | None) -> Tensor:
    """Expand ``[N, rows, cols]`` cells to ``[N, H, W]`` pixels (any dtype of mask)."""
    n, gh, gw = cell_mask.shape
    ph, pw = patch_size if patch_size is not None else (None, None)
    if height % gh == 0 and width % gw == 0 and ph in (None, height // gh) and pw in (None, width // gw):
        # Equal cells: a broadcast copy, no gather.
        ch, cw = height // gh, width // gw
        return cell_mask[:, :, None, :, None].expand(n, gh, ch, gw, cw).reshape(n, height, width)
    rows = cell_index(height, gh, ph, device=cell_mask.device)
    cols = cell_index(width, gw, pw, device=cell_mask.device)
    return cell_mask[:, rows[:, None], cols[None, :]]


def apply_cell_mask(
    x_a: Tensor,
    x_b: Tensor,
    cell_mask: Tensor,
    *,
    patch_size: int | tuple[int, int] | None = None,
    inplace: bool = False,
) -> tuple[Tensor, Tensor]:
    """Exchange the masked cells between ``x_a`` and ``x_b`` (``[N, ..., H, W]``) at the same positions.

    Deterministic and loop-free: ``out_a = where(mask, x_b, x_a)`` and the mirror for ``out_b``,
    so every output pixel is the same-position pixel of one input, for any dtype and layout.
    """
    check_pair(x_a, x_b, ("x_a", "x_b"), 3)
    if cell_mask.dim() != 3 or cell_mask.shape[0] != x_a.shape[0]:
        raise ValueError(
            f"cell_mask must be [N, rows, cols] with N = {x_a.shape[0]}, got shape {tuple(cell_mask.shape)}"
        )
    h, w = x_a.shape[-2:]
    ps = as_pair(patch_size, "patch_size") if patch_size is not None else None
    cells = cell_mask.to(device=x_a.device, dtype=torch.bool)
    lead = (cells.shape[0], *([1] * (x_a.dim() - 3)), h, w)
    # The bitwise path reinterprets bits, which autograd cannot follow: tensors that need a
    # gradient (features, logits) take the differentiable ``where`` path instead.
    needs_grad = x_a.requires_grad or x_b.requires_grad
    bitwise_ok = x_a.element_size() in _BITS and x_a.dtype != torch.bool and not needs_grad
    if x_a.device.type == "cpu" and bitwise_ok:
        bits = _BITS[x_a.element_size()]
        # Expand the all-ones/zeros integer mask at cell size, then to pixels: cheaper than a bool pass.
        ones = _pixel_mask(cells.to(bits).neg_(), h, w, ps).view(lead)
        return _select_bitwise(ones, x_a, x_b, inplace)
    return _select_where(_pixel_mask(cells, h, w, ps).view(lead), x_a, x_b, inplace)


# Integer types of each element size: a bitwise select moves the exact bits of any dtype.
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _select_where(pix: Tensor, x_a: Tensor, x_b: Tensor, inplace: bool) -> tuple[Tensor, Tensor]:
    """One fused kernel per output: the fast path on accelerators."""
    out_a = torch.where(pix, x_b, x_a)
    out_b = torch.where(pix, x_a, x_b)
    if inplace:
        x_a.copy_(out_a)
        x_b.copy_(out_b)
        return x_a, x_b
    return out_a, out_b


def _select_bitwise(ones: Tensor, x_a: Tensor, x_b: Tensor, inplace: bool) -> tuple[Tensor, Tensor]:
    """``a ^ ((a ^ b) & m)`` on the raw bits, ``m`` all ones where swapped: exact like ``where``, and
    several times faster on CPU, where ``torch.where`` is not vectorised."""
    bits = ones.dtype
    ai, bi = x_a.view(bits), x_b.view(bits)
    diff = (ai ^ bi).bitwise_and_(ones)
    if inplace:
        ai.bitwise_xor_(diff)
        bi.bitwise_xor_(diff)
        return x_a, x_b
    # Two large allocations only (the outputs): ``diff`` becomes out_a in place.
    out_b = bi ^ diff
    return diff.bitwise_xor_(ai).view(x_a.dtype), out_b.view(x_a.dtype)
