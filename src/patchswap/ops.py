"""The intra-class patch swap op: exchange random grid cells between paired images.

Pure tensor code (torch only). Sampling (which pairs swap, which cells) is kept apart from
applying a cell mask, so the application step is deterministic, loop-free and compiles to one
graph, and the same cell mask can be applied to images and to dense label maps alike.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "K_RULES",
    "SwapResult",
    "PatchSwap",
    "apply_cell_mask",
    "cell_index",
    "grid_for",
    "k_distribution",
    "patch_swap",
    "patch_swap_boxes",
    "patch_swap_targets",
    "sample_cell_mask",
]

K_RULES = ("uniform", "fixed", "beta")


class SwapResult(NamedTuple):
    """Both swapped views plus a per-pair record for logging.

    ``cell_mask[i, r, c]`` is True where pair i exchanged cell (r, c); ``fraction[i]`` is the
    share of pixels that came from the partner (0 for pairs that did not swap).
    """

    a: Tensor
    b: Tensor
    cell_mask: Tensor
    fraction: Tensor


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
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
    if patch_size is not None:
        ph, pw = _pair(patch_size, "patch_size")
        if ph < 1 or pw < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size!r}")
        if ph > height or pw > width:
            raise ValueError(
                f"patch_size {(ph, pw)} is larger than the image ({height}x{width}); use a smaller patch_size"
            )
        gh, gw = math.ceil(height / ph), math.ceil(width / pw)
    else:
        if grid is None:
            raise ValueError("give either grid=(rows, cols) or patch_size=pixels")
        gh, gw = _pair(grid, "grid")
        if gh < 1 or gw < 1:
            raise ValueError(f"grid must be positive, got {grid!r}")
        if gh > height or gw > width:
            raise ValueError(
                f"grid {(gh, gw)} is finer than the image ({height}x{width}): every cell needs at least "
                "one pixel; use a coarser grid"
            )
    if gh * gw < 2:
        raise ValueError(
            f"the grid has {gh * gw} cell; a swap needs at least 2 cells (e.g. grid=(2, 2)) "
            "so that each view keeps part of its own image"
        )
    return gh, gw


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


@lru_cache(maxsize=64)
def _beta_binomial_pmf(cells: int, a: float, b: float) -> tuple[float, ...]:
    """P(k) for k = 1 + Binomial(cells - 2, r), r ~ Beta(a, b): a Beta-distributed swap ratio.

    With a = b = 1 this is exactly uniform on 1..cells-1, the seed's rule.
    """
    n = cells - 2
    j = torch.arange(n + 1, dtype=torch.float64)
    log_choose = torch.lgamma(torch.tensor(n + 1.0)) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)

    def log_beta(x: Tensor, y: Tensor) -> Tensor:
        return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)

    a_t, b_t = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    log_p = log_choose + log_beta(j + a_t, n - j + b_t) - log_beta(a_t, b_t)
    p = torch.exp(log_p)
    return tuple((p / p.sum()).tolist())


def k_distribution(
    cells: int, k_rule: str = "uniform", ratio: float = 0.5, beta: tuple[float, float] = (1.0, 1.0)
) -> Tensor:
    """Probability of swapping k cells, for k = 0..cells, given that a pair swaps (float64).

    ``uniform``: k uniform in 1..cells-1. ``fixed``: k = round(ratio * cells) clamped to
    1..cells-1. ``beta``: k = 1 + Binomial(cells - 2, r) with r ~ Beta(*beta), so the expected
    swapped share follows a Beta law (beta=(1, 1) equals ``uniform``).
    """
    _check_k_rule(k_rule, ratio, beta)
    p = torch.zeros(cells + 1, dtype=torch.float64)
    if k_rule == "uniform":
        p[1:cells] = 1.0 / (cells - 1)
    elif k_rule == "fixed":
        p[_fixed_k(cells, ratio)] = 1.0
    else:
        p[1:cells] = torch.tensor(
            _beta_binomial_pmf(cells, float(beta[0]), float(beta[1])), dtype=torch.float64
        )
    return p


def _fixed_k(cells: int, ratio: float) -> int:
    return int(min(max(round(ratio * cells), 1), cells - 1))


def _check_k_rule(k_rule: str, ratio: float, beta: tuple[float, float]) -> None:
    if k_rule not in K_RULES:
        raise ValueError(f"k_rule must be one of {K_RULES}, got {k_rule!r}")
    if k_rule == "fixed" and not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1) for k_rule='fixed', got {ratio!r}")
    if k_rule == "beta" and (len(beta) != 2 or min(beta) <= 0):
        raise ValueError(f"beta must be two positive numbers (a, b) for k_rule='beta', got {beta!r}")


def sample_cell_mask(
    n: int,
    grid: tuple[int, int],
    *,
    prob: float = 0.5,
    k_rule: str = "uniform",
    ratio: float = 0.5,
    beta: tuple[float, float] = (1.0, 1.0),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw which cells each of ``n`` pairs exchanges: a bool tensor ``[n, rows, cols]``.

    Each pair swaps with probability ``prob``; a swapping pair exchanges k cells chosen
    uniformly without replacement, k drawn by ``k_rule`` (see :func:`k_distribution`).
    Random numbers come from ``generator`` (on its device) or the global RNG, so a seeded
    generator fixes the result; the mask is then moved to ``device``.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob!r}")
    _check_k_rule(k_rule, ratio, beta)
    gh, gw = grid
    cells = gh * gw
    if cells < 2:
        raise ValueError(f"grid {grid} has fewer than 2 cells; use e.g. grid=(2, 2)")
    draw_device = generator.device if generator is not None else device
    swap = torch.rand(n, generator=generator, device=draw_device) < prob
    if k_rule == "uniform":
        k = torch.randint(1, cells, (n,), generator=generator, device=draw_device)
    elif k_rule == "fixed":
        k = torch.full((n,), _fixed_k(cells, ratio), device=draw_device, dtype=torch.long)
    else:
        # Inverse-CDF sampling: loop-free, and the generator fixes it like the other draws.
        pmf = _beta_binomial_pmf(cells, float(beta[0]), float(beta[1]))
        cdf = torch.tensor(pmf, dtype=torch.float32, device=draw_device).cumsum(0)
        u = torch.rand(n, generator=generator, device=draw_device)
        k = torch.searchsorted(cdf, u, right=True).clamp(max=cells - 2) + 1
    # A uniformly random k-subset: rank i.i.d. scores and keep the k smallest.
    order = torch.rand(n, cells, generator=generator, device=draw_device).argsort(dim=1)
    first_k = (torch.arange(cells, device=draw_device) < k[:, None]) & swap[:, None]
    mask = torch.zeros_like(first_k).scatter_(1, order, first_k)
    return mask.view(n, gh, gw).to(device if device is not None else draw_device)


def _check_pair(x_a: Tensor, x_b: Tensor, names: tuple[str, str], min_dim: int) -> None:
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
    _check_pair(x_a, x_b, ("x_a", "x_b"), 3)
    if cell_mask.dim() != 3 or cell_mask.shape[0] != x_a.shape[0]:
        raise ValueError(
            f"cell_mask must be [N, rows, cols] with N = {x_a.shape[0]}, got shape {tuple(cell_mask.shape)}"
        )
    h, w = x_a.shape[-2:]
    ps = _pair(patch_size, "patch_size") if patch_size is not None else None
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


def _swapped_fraction(
    cell_mask: Tensor, height: int, width: int, patch_size: tuple[int, int] | None
) -> Tensor:
    gh, gw = cell_mask.shape[-2:]
    ph, pw = patch_size if patch_size is not None else (None, None)
    row_sizes = torch.bincount(cell_index(height, gh, ph, device=cell_mask.device), minlength=gh)
    col_sizes = torch.bincount(cell_index(width, gw, pw, device=cell_mask.device), minlength=gw)
    area = (row_sizes[:, None] * col_sizes[None, :]).to(torch.float32)
    return (cell_mask.to(torch.float32) * area).sum(dim=(1, 2)) / float(height * width)


def _one_layout(
    grid: int | tuple[int, int] | None, patch_size: int | tuple[int, int] | None
) -> int | tuple[int, int] | None:
    """The grid to use: ``grid`` (default 2x2), or None when cells are ``patch_size`` pixels; both
    at once is an error (one would silently win)."""
    if grid is not None and patch_size is not None:
        raise ValueError(
            f"give grid or patch_size, not both (got grid={grid!r} and patch_size={patch_size!r}): "
            "patch_size sets the cells in pixels, grid sets how many"
        )
    return None if patch_size is not None else (grid if grid is not None else (2, 2))


def patch_swap(
    x_a: Tensor,
    x_b: Tensor,
    *,
    grid: int | tuple[int, int] | None = None,
    patch_size: int | tuple[int, int] | None = None,
    prob: float = 0.5,
    k_rule: str = "uniform",
    ratio: float = 0.5,
    beta: tuple[float, float] = (1.0, 1.0),
    generator: torch.Generator | None = None,
    inplace: bool = False,
) -> SwapResult:
    """Intra-class patch swap on a batch of same-class pairs ``(x_a[i], x_b[i])``, ``[N, C, H, W]``.

    With probability ``prob`` per pair, k random cells of the grid (or of ``patch_size`` pixel
    patches) are exchanged at the same positions; k follows ``k_rule`` (``uniform`` in 1..G-1 as
    in the paper's code, ``fixed`` = round(ratio * G), or ``beta``). Give ``grid`` or ``patch_size``,
    not both (neither: a 2x2 grid). Inputs are left untouched unless ``inplace=True``. Returns
    :class:`SwapResult` ``(a, b, cell_mask, fraction)``.
    """
    _check_pair(x_a, x_b, ("x_a", "x_b"), 4)
    h, w = x_a.shape[-2:]
    g = grid_for(h, w, _one_layout(grid, patch_size), patch_size)
    mask = sample_cell_mask(
        x_a.shape[0],
        g,
        prob=prob,
        k_rule=k_rule,
        ratio=ratio,
        beta=beta,
        generator=generator,
        device=x_a.device,
    )
    ps = _pair(patch_size, "patch_size") if patch_size is not None else None
    a, b = apply_cell_mask(x_a, x_b, mask, patch_size=ps, inplace=inplace)
    return SwapResult(a, b, mask, _swapped_fraction(mask, h, w, ps))


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
    _check_pair(t_a, t_b, ("t_a", "t_b"), 3)
    return apply_cell_mask(t_a, t_b, cell_mask, patch_size=patch_size)


def _cell_edges(
    size: int, cells: int, patch_size: int | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """The ``cells + 1`` pixel boundaries along an axis, matching :func:`cell_index`."""
    i = torch.arange(cells + 1, device=device)
    if patch_size is not None:
        edges = (i * patch_size).clamp(max=size)
    else:
        edges = torch.div(i * size, cells, rounding_mode="floor")
    return edges.to(dtype)


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
    ps = _pair(patch_size, "patch_size") if patch_size is not None else None
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
        rows = _cell_edges(height, gh, ps[0] if ps else None, dev, dt)
        cols = _cell_edges(width, gw, ps[1] if ps else None, dev, dt)
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


class PatchSwap:
    """Configured patch swap, in the style of timm's ``Mixup``: build once, call per batch.

    ``swap(x_a, x_b)`` swaps explicit pairs; ``swap_batch(x)`` takes the ``[anchors..., partners...]``
    layout of :class:`~patchswap.sampling.ClassPairBatchSampler` and returns the same layout.
    """

    def __init__(
        self,
        grid: int | tuple[int, int] | None = None,
        *,
        patch_size: int | tuple[int, int] | None = None,
        prob: float = 0.5,
        k_rule: str = "uniform",
        ratio: float = 0.5,
        beta: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}")
        _check_k_rule(k_rule, ratio, beta)
        grid = _one_layout(grid, patch_size)  # grid or patch_size (default: a 2x2 grid)
        self.grid, self.patch_size, self.prob = grid, patch_size, prob
        self.k_rule, self.ratio, self.beta = k_rule, ratio, tuple(beta)

    def __call__(
        self, x_a: Tensor, x_b: Tensor, generator: torch.Generator | None = None, inplace: bool = False
    ) -> SwapResult:
        return patch_swap(
            x_a,
            x_b,
            grid=self.grid,
            patch_size=self.patch_size,
            prob=self.prob,
            k_rule=self.k_rule,
            ratio=self.ratio,
            beta=self.beta,
            generator=generator,
            inplace=inplace,
        )

    def swap_batch(
        self, x: Tensor, generator: torch.Generator | None = None, inplace: bool = False
    ) -> tuple[Tensor, SwapResult]:
        """Swap a ``[2N, ...]`` batch laid out as N anchors then their N partners.

        With ``inplace=True`` the batch itself is rewritten and returned (no copy, no concatenation).
        """
        if x.shape[0] % 2:
            raise ValueError(
                f"swap_batch needs an even batch [anchors..., partners...], got {x.shape[0]} rows"
            )
        n = x.shape[0] // 2
        res = self(x[:n], x[n:], generator, inplace=inplace)
        return (x if inplace else torch.cat([res.a, res.b])), res

    def __repr__(self) -> str:
        where = f"patch_size={self.patch_size}" if self.patch_size is not None else f"grid={self.grid}"
        return f"PatchSwap({where}, prob={self.prob}, k_rule={self.k_rule!r})"
