"""Setting up same-class pairs for the 50,000 CIFAR-10 training images, against the seed.

The images are wrapped as a torch Dataset that decodes per item (uint8 array -> PIL -> tensor, as
torchvision's CIFAR10 with ToTensor does), with a ``targets`` list. The seed's
``SameClassPairDataset`` constructor iterates the whole dataset to find classes; patchswap reads
``targets`` and draws a whole epoch of pairs.

    python benchmarks/bench_pairing.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import load_cifar10, load_seed, machine
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from patchswap import ClassPairBatchSampler


class DecodingCIFAR(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.data, self.targets = x, y.tolist()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.data[i])
        return pil_to_tensor(img).float().div_(255), self.targets[i]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    seed = load_seed()
    data = load_cifar10() if seed is not None else None
    if data is None:
        return
    ds = DecodingCIFAR(*data)
    seed_t, ours_t, ours_epoch_t = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        seed.SameClassPairDataset(ds)
        seed_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sampler = ClassPairBatchSampler.from_dataset(ds, 64, seed=0)
        ours_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        batches = list(sampler)
        ours_epoch_t.append(time.perf_counter() - t0)
    s, o, e = min(seed_t), min(ours_t), min(ours_epoch_t)
    print(f"# pairing: {len(ds)} CIFAR-10 images, per-item decoding dataset ({machine()})")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| seed: SameClassPairDataset(dataset) | {s:.3f} |")
    print(f"| patchswap: ClassPairBatchSampler.from_dataset(dataset, 64) | {o:.4f} |")
    print(f"| patchswap: draw one epoch of pairs ({len(batches)} batches) | {e:.4f} |")
    print(f"| speed-up, constructor vs constructor | {s / o:.0f}x |")
    print(
        f"| speed-up, seed constructor vs patchswap constructor + one epoch of pairs | {s / (o + e):.0f}x |"
    )


if __name__ == "__main__":
    main()
