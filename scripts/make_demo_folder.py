"""Write a small image folder to fine-tune on: some classes of an npz dataset as JPEG files.

    python scripts/make_demo_folder.py demo     # CIFAR-10 dog, frog, horse, ship, truck from ../shared/data

writes ``demo/train/<class>/<n>.jpg`` and ``demo/test/<class>/<n>.jpg`` (disjoint images, chosen by a
seeded shuffle): the layout of ``--data folder:demo``, as a folder of your own photos would be. Works
offline. The npz holds ``x`` (uint8 NHWC), ``y`` (int) and ``classes`` (names), like the CIFAR-10
files of ``../shared/data``; ``--classes`` picks class indices (default 5-9: the five classes the
pretrained file of docs/results/finetune-cifar5 was *not* trained on).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# ../shared beside the repository (not the current folder): the script works from anywhere.
DEFAULT_NPZ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-train-part1.npz"


def make_folder(
    out: Path,
    npz: str | Path = DEFAULT_NPZ,
    *,
    classes: list[int] | None = None,
    train_per_class: int = 100,
    test_per_class: int = 100,
    size: int | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Write the folder; returns ``{"train": n, "test": m, "classes": k}``."""
    data = np.load(npz)
    x, y, names = data["x"], data["y"], [str(c) for c in data["classes"]]
    classes = list(range(5, 10)) if classes is None else classes
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "test": 0, "classes": len(classes)}
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) < train_per_class + test_per_class:
            raise ValueError(
                f"class {names[c]!r} has {len(idx)} images, fewer than {train_per_class}+{test_per_class}"
            )
        for split, chosen in (
            ("train", idx[:train_per_class]),
            ("test", idx[train_per_class:][:test_per_class]),
        ):
            folder = out / split / names[c]
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                image = Image.fromarray(x[i].squeeze() if x.shape[-1] == 1 else x[i])
                if size:
                    image = image.resize((size, size), Image.Resampling.BICUBIC)
                image.save(folder / f"{i:05d}.jpg", quality=95)
                counts[split] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write train/ and test/ into")
    parser.add_argument("--npz", default=DEFAULT_NPZ, help=f"source arrays (default {DEFAULT_NPZ})")
    parser.add_argument(
        "--classes", default="5,6,7,8,9", help="class indices, comma-separated (default 5,6,7,8,9)"
    )
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=None, help="resize to SIZE x SIZE (default: as stored)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not Path(args.npz).is_file():
        parser.error(
            f"no source arrays at {args.npz}: pass --npz FILE (an npz with x, y and classes, such as the "
            "CIFAR-10 files of ../shared/data)"
        )
    counts = make_folder(
        args.out,
        args.npz,
        classes=[int(c) for c in args.classes.split(",")],
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        size=args.size,
        seed=args.seed,
    )
    print(f"{args.out}: train {counts['train']} | test {counts['test']} JPEGs | {counts['classes']} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
