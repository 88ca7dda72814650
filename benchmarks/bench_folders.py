"""Image-folder loading: patchswap's folder path against torchvision's ImageFolder + DataLoader loop.

A JPEG folder is written once from the CIFAR-10 arrays of ../shared/data (upscaled to 256x256, 10
classes). Both loops deliver the same thing, normalised float32 training batches of RandomResizedCrop
(224) + horizontal flip, with the same batch size and the same number of DataLoader workers:

* torchvision: ``ImageFolder`` with ``Compose([RandomResizedCrop, RandomHorizontalFlip, ToTensor,
  Normalize])`` per item (PIL decoding), ``DataLoader(batch_size, shuffle=True, num_workers)``;
* patchswap: ``build_data("folder:DIR")`` -- one ``__getitems__`` per batch in the workers
  (torchvision.io decoding, crop + resize on uint8 tensors), then the bundle's ``train_augment``
  (batched flip + normalisation) on ``--device`` after the transfer, as the engine does.

Epochs alternate (torchvision, patchswap, torchvision, ...) so drift hits both alike; medians.

    python benchmarks/bench_folders.py                        # 3,000 images, 2 workers, CPU
    python benchmarks/bench_folders.py --images 5000 --workers 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import CIFAR10_FILES, machine
from torch.utils.data import DataLoader

from patchswap.data import build_data, collate_batch
from patchswap.data.bundle import IMAGENET_MEAN, IMAGENET_STD


def write_folder(root: Path, images: int, size: int) -> Path:
    """``root/train/<class>/*.jpg``: ``images`` CIFAR-10 pictures (a seeded class-balanced pick) at size^2."""
    from PIL import Image

    done = root / f".complete-{images}-{size}"
    if done.exists():
        return root
    data = np.load(CIFAR10_FILES[0])
    x, y, classes = data["x"], data["y"], data["classes"]
    pick = np.random.default_rng(0).permutation(len(y))[:images]
    for i in pick:
        d = root / "train" / str(classes[y[i]])
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).resize((size, size), Image.BICUBIC).save(d / f"{i:05d}.jpg", quality=90)
    done.touch()
    return root


def torchvision_epoch(root: Path, crop: int, batch: int, workers: int) -> tuple[float, int]:
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose(
        [
            T.RandomResizedCrop(crop),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    loader = DataLoader(
        ImageFolder(str(root / "train"), tf), batch_size=batch, shuffle=True, num_workers=workers
    )
    n = 0
    t0 = time.perf_counter()
    for x, _ in loader:
        n += x.shape[0]
    return time.perf_counter() - t0, n


def patchswap_epoch(
    root: Path, crop: int, batch: int, workers: int, device: torch.device
) -> tuple[float, int]:
    bundle = build_data(f"folder:{root}", image_size=crop, val_split=0)
    augment = bundle.train_augment.to(device)
    loader = DataLoader(
        bundle.train,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_batch,
        pin_memory=device.type == "cuda",
    )
    n = 0
    t0 = time.perf_counter()
    for images, _ in loader:
        x = augment(images.to(device, non_blocking=True))
        n += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3000, help="JPEGs in the folder (default 3000)")
    ap.add_argument("--size", type=int, default=256, help="side of the written JPEGs (default 256)")
    ap.add_argument("--crop", type=int, default=224, help="RandomResizedCrop size (default 224)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers, both loops (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="epochs of each loop (default 3)")
    ap.add_argument("--device", default="cpu", help="where patchswap's batched flip + normalise run")
    ap.add_argument("--dir", default=None, help="folder to write the JPEGs to (default: a temp dir)")
    args = ap.parse_args()
    if not all(f.exists() for f in CIFAR10_FILES):
        print(f"skipped: CIFAR-10 arrays not found ({CIFAR10_FILES[0]})")
        return
    root = Path(args.dir or Path(os.environ.get("TMPDIR", "/tmp")) / "patchswap-bench-folders")
    write_folder(root, args.images, args.size)
    device = torch.device(args.device)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"folder:  {root} ({args.images} JPEGs, {args.size}x{args.size}), crop {args.crop}, "
        f"batch {args.batch}, {args.workers} workers"
    )
    times: dict[str, list[float]] = {"torchvision ImageFolder + DataLoader": [], "patchswap folder:": []}
    for _ in range(args.repeats):
        dt, n = torchvision_epoch(root, args.crop, args.batch, args.workers)
        times["torchvision ImageFolder + DataLoader"].append(n / dt)
        dt, n = patchswap_epoch(root, args.crop, args.batch, args.workers, device)
        times["patchswap folder:"].append(n / dt)
    base = statistics.median(times["torchvision ImageFolder + DataLoader"])
    print("\n| loop | images/s (median) | all epochs | speed-up |\n|---|---|---|---|")
    for name, rates in times.items():
        med = statistics.median(rates)
        print(f"| {name} | {med:,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} | {med / base:.2f}x |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
