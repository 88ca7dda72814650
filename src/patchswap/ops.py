"""The intra-class patch swap op: exchange random grid cells between paired images.

Pure tensor code (torch only). Sampling (which pairs swap, which cells) is kept apart from
applying a cell mask, so the application step is deterministic, loop-free and compiles to one
graph, and the same cell mask can be applied to images and to dense label maps alike. The cell grid
and applying a mask live in :mod:`patchswap.cells`; label maps and boxes follow a swap in
:mod:`patchswap.swap_targets`. This module re-exports both, so ``patchswap.ops`` names the whole op.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

from patchswap.cells import apply_cell_mask, as_pair, cell_index, check_pair, grid_for
from patchswap.swap_targets import patch_swap_boxes, patch_swap_targets

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


def _check_swap(prob: float, k_rule: str, ratio: float, beta: tuple[float, float]) -> None:
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob!r}")
    _check_k_rule(k_rule, ratio, beta)


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
    _check_swap(prob, k_rule, ratio, beta)
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
    check_pair(x_a, x_b, ("x_a", "x_b"), 4)
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
    ps = as_pair(patch_size, "patch_size") if patch_size is not None else None
    a, b = apply_cell_mask(x_a, x_b, mask, patch_size=ps, inplace=inplace)
    return SwapResult(a, b, mask, _swapped_fraction(mask, h, w, ps))


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
        _check_swap(prob, k_rule, ratio, beta)
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
