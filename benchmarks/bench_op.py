"""The swap op against the seed's per-sample loop, side by side in one run.

python benchmarks/bench_op.py [--batch 128] [--repeats 50] [--device cpu]
"""

from __future__ import annotations

import argparse
import random

import torch
from _common import load_seed, machine, time_interleaved

from patchswap import patch_swap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    seed = load_seed()
    if seed is None:
        return
    torch.manual_seed(0)
    random.seed(0)
    dev = torch.device(args.device)
    a = torch.rand(args.batch, 3, args.size, args.size, device=dev)
    b = torch.rand(args.batch, 3, args.size, args.size, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(f"# op: batch {args.batch} of 3x{args.size}x{args.size} float32 on {dev} ({machine()})")
    print("| grid | seed op (ms) | patchswap (ms) | speed-up | patchswap inplace=True (ms) | speed-up |")
    print("|---|---|---|---|---|---|")
    for g in (2, 4, 8):
        seed_op = seed.IntraClassPatchSwap(patch_size=args.size // g, swap_prob=0.5)
        gen = torch.Generator(device=dev).manual_seed(0)

        def run_seed(op=seed_op):
            op(a, b)
            sync()

        def run_ours(g=g, gen=gen):
            patch_swap(a, b, grid=(g, g), prob=0.5, generator=gen)
            sync()

        def run_inplace(g=g, gen=gen):  # overwrites a and b: their values do not matter for timing
            patch_swap(a, b, grid=(g, g), prob=0.5, generator=gen, inplace=True)
            sync()

        t = time_interleaved({"seed": run_seed, "ours": run_ours, "inplace": run_inplace}, args.repeats)
        print(
            f"| {g}x{g} | {t['seed'] * 1e3:.3f} | {t['ours'] * 1e3:.3f} | {t['seed'] / t['ours']:.1f}x "
            f"| {t['inplace'] * 1e3:.3f} | {t['seed'] / t['inplace']:.1f}x |"
        )


if __name__ == "__main__":
    main()
