"""``patchswap show-pairs``: a picture of what the swap does to a run's own training images.

Rows: anchors, their same-class partners, the swapped anchors, the swapped partners. The pairs come
from the run's sampler and the swap from the run's ``ips`` options and seed, so the picture shows
exactly the first step's pairs of the configured run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["PairsPicture", "draw_pairs"]


@dataclass
class PairsPicture:
    path: Path
    classes: list[str]  # class name of each column
    fractions: list[float]  # swapped share of each pair


def draw_pairs(cfg: Any, *, pairs: int = 8, out: str | Path = "pairs.png", scale: int = 0) -> PairsPicture:
    """Write the picture of ``pairs`` pairs of ``cfg``'s data to ``out`` (``scale`` 0: about 96 px a tile)."""
    from torchvision.utils import make_grid, save_image

    from patchswap.engine.training import build_bundle
    from patchswap.methods import method_class
    from patchswap.sampling import ClassPairBatchSampler, dataset_labels

    bundle = build_bundle(cfg)
    ips = method_class("ips")(dataclasses.replace(cfg.methods["ips"]))
    sampler = ClassPairBatchSampler(
        dataset_labels(bundle.train), pairs, seed=cfg.trainer.seed, drop_last=False
    )
    idx = next(iter(sampler))
    images = torch.stack([torch.as_tensor(bundle.train[i][0]) for i in idx])
    n = len(idx) // 2
    gen = torch.Generator().manual_seed(cfg.trainer.seed)
    res = ips.swap(images[:n], images[n:], gen)
    grid = torch.cat([images[:n], images[n:], res.a, res.b]).float() / 255
    if grid.shape[1] == 1:
        grid = grid.expand(-1, 3, -1, -1)
    scale = scale or max(1, 96 // max(grid.shape[-2:]))
    if scale > 1:
        grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(grid, nrow=n, padding=2, pad_value=1.0), out)
    classes = [bundle.classes[int(bundle.train[i][1])] for i in idx[:n]]
    return PairsPicture(out, classes, [round(float(f), 2) for f in res.fraction])
