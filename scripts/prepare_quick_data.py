"""Write a class-balanced subset of the CIFAR-10 training arrays of ../shared/data to one npz file.

The GPU machine receives the working tree plus at most 64 MiB of extra files, so the quick GPU study
(scripts/gpu_quick_study.sh) brings its data as this file (ignored by git):

    python scripts/prepare_quick_data.py                        # data/cifar10-quick.npz, 1,500 per class
    python scripts/prepare_quick_data.py --per-class 500 --out /tmp/small.npz

The first ``per_class`` images of every class, taken from both halves of the training set in a
seeded shuffled order, so the subset is the same on every machine. 1,500 per class (15,000 images)
is 46 MB of uint8 pixels (stored uncompressed: the file loads with no decoding work).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PATCHSWAP_SHARED", REPO.parent / "shared"))


def subset(x: np.ndarray, y: np.ndarray, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(y))
    keep = np.concatenate([order[y[order] == c][:per_class] for c in np.unique(y)])
    keep = keep[np.random.default_rng(seed + 1).permutation(len(keep))]
    return x[keep], y[keep]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=1500)
    ap.add_argument("--out", default=str(REPO / "data" / "cifar10-quick.npz"))
    ap.add_argument("--shared", default=str(SHARED), help="folder holding data/cifar10-train-part{1,2}.npz")
    args = ap.parse_args()
    files = [Path(args.shared) / "data" / f"cifar10-train-part{i}.npz" for i in (1, 2)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise SystemExit(
            f"CIFAR-10 arrays not found: {', '.join(missing)} (set --shared or PATCHSWAP_SHARED)"
        )
    parts = [np.load(f) for f in files]
    x = np.concatenate([p["x"] for p in parts])
    y = np.concatenate([p["y"] for p in parts])
    xs, ys = subset(x, y, args.per_class)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x=xs, y=ys, classes=parts[0]["classes"])
    size = out.stat().st_size
    print(f"wrote {out}: {len(ys)} images ({args.per_class} per class), {size / 2**20:.1f} MiB")
    if size > 56 * 2**20:
        print("warning: over 56 MiB; with the working tree it may not fit the 64 MiB a GPU machine receives")


if __name__ == "__main__":
    main()
