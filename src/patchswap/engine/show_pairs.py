"""``patchswap show-pairs``: a picture of what the swap does to a run's own training images.

Rows: anchors, their same-class partners, the swapped anchors, the swapped partners, labelled at the
left, with each column's class above it. Each anchor gets a same-class partner drawn as the pair
sampler draws them (seeded by the run's seed), and the swap follows the run's ``ips`` options (grid,
``prob``, k rule), on the images before augmentation: what the swap does to this data, not a replay
of a training step (``ips.pairing in_batch`` forms its pairs inside class-balanced batches instead).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["PairsPicture", "draw_pairs"]


ROWS = ("anchor", "partner", "swapped anchor", "swapped partner")
PAD = 2  # pixels between tiles


@dataclass
class PairsPicture:
    path: Path
    classes: list[str]  # class name of each column
    fractions: list[float]  # swapped share of each pair
    origin: tuple[int, int] = (0, 0)  # (top, left) of the tile grid, below the classes, right of the labels
    tile: int = 0  # side of a tile in pixels

    def tile_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of the tile of ``row`` (see ROWS) and pair ``col``."""
        top = self.origin[0] + PAD + row * (self.tile + PAD)
        left = self.origin[1] + PAD + col * (self.tile + PAD)
        return top, left, top + self.tile, left + self.tile


def _labelled(grid: Any, classes: list[str], tile: int) -> tuple[Any, tuple[int, int]]:
    """The tile grid (a PIL image) with the row labels at its left and the classes above each column."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(10, min(14, tile // 3)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max(probe.textlength(r, font=font) for r in ROWS)) + 8
    ascent, descent = font.getmetrics()
    head = ascent + descent + 6
    out = Image.new("RGB", (label_w + grid.width, head + grid.height), "white")
    out.paste(grid, (label_w, head))
    draw = ImageDraw.Draw(out)
    for r, text in enumerate(ROWS):
        y = head + PAD + r * (tile + PAD) + (tile - ascent - descent) // 2
        draw.text((4, y), text, fill="black", font=font)
    for c, name in enumerate(classes):
        while name and probe.textlength(name, font=font) > tile + PAD:
            name = name[:-1]
        x = label_w + PAD + c * (tile + PAD) + (tile - probe.textlength(name, font=font)) / 2
        draw.text((x, 3), name, fill="black", font=font)
    return out, (head, label_w)


def draw_pairs(cfg: Any, *, pairs: int = 8, out: str | Path = "pairs.png", scale: int = 0) -> PairsPicture:
    """Write the picture of ``pairs`` pairs of ``cfg``'s data to ``out`` (``scale`` 0: about 96 px a tile)."""
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import make_grid

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
    classes = [str(bundle.classes[int(bundle.train[i][1])]) for i in idx[:n]]
    tiles = make_grid(grid, nrow=n, padding=PAD, pad_value=1.0)
    # save_image's rounding: pixels stay exactly the scaled originals
    pixels = tiles.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    picture, origin = _labelled(to_pil_image(pixels), classes, int(grid.shape[-1]))
    picture.save(out)
    return PairsPicture(out, classes, [round(float(f), 2) for f in res.fraction], origin, int(grid.shape[-1]))
