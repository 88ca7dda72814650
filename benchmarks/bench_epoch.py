"""One IPS training epoch on the CIFAR-10 training images: `patchswap train` against the seed's loop.

Both sides train the same resnet8 on the same images with 64 pairs per step (128 images through
the network) and the usual CIFAR augmentation (random crop with 4-pixel padding, horizontal flip,
normalisation):

* patchswap: ``patchswap.engine.train`` with ``--method ips`` (Lightning, in-memory uint8 data,
  augmentation and swap batched on the device, both views in one forward).
* seed: the loop of the seed's example -- ``SameClassPairDataset`` over a per-item decoding dataset
  (uint8 array -> PIL -> torchvision transforms, as torchvision's CIFAR10 does), ``DataLoader(batch_size=64,
  shuffle=True)``, its ``IntraClassPatchSwap`` and ``SelfDistillationLoss``, two forward passes.

    python benchmarks/bench_epoch.py                  # the whole 50,000-image epoch
    python benchmarks/bench_epoch.py --images 5000    # a quicker, smaller epoch
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import CIFAR10_FILES, load_cifar10, load_seed, machine


def seed_epoch(seed, x: np.ndarray, y: np.ndarray, batch: int, workers: int) -> tuple[float, float, int]:
    from PIL import Image
    from torchvision import transforms as T

    from patchswap.models import create_model

    tf = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ]
    )

    class Decoding(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int):
            return tf(Image.fromarray(x[i])), int(y[i])

    torch.manual_seed(0)
    t0 = time.perf_counter()
    pairs = seed.SameClassPairDataset(Decoding())
    setup = time.perf_counter() - t0
    loader = torch.utils.data.DataLoader(
        pairs, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True
    )
    model = create_model("resnet8", 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    swap = seed.IntraClassPatchSwap(patch_size=16, swap_prob=0.5)  # a 2x2 grid on 32x32
    criterion = seed.SelfDistillationLoss(temperature=4.0)
    model.train()
    images = 0
    t0 = time.perf_counter()
    for batch_a, batch_b, labels in loader:
        swapped_a, swapped_b = swap(batch_a, batch_b)
        loss = criterion(model(swapped_a), model(swapped_b), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        images += 2 * len(labels)
    return setup, time.perf_counter() - t0, images


VARIANTS = {
    "fp32, NCHW": {"model.channels_last": "false", "trainer.precision": "32-true"},
    "fp32, channels_last (default)": {"model.channels_last": "true", "trainer.precision": "32-true"},
    "bf16-mixed, channels_last": {"model.channels_last": "true", "trainer.precision": "bf16-mixed"},
}


def patchswap_epoch(
    files: list[Path], images: int | None, batch: int, variant: dict[str, str]
) -> tuple[float, float, int]:
    from patchswap.engine import train
    from patchswap.engine.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {
            "data.name": "npz:" + ",".join(str(f) for f in files),
            "data.val_split": "0",
            "data.batch_size": str(batch),
            "model.name": "resnet8",
            "method": "ips",
            "ips.pairing": "partner",  # the seed's loop: a partner per anchor, two images each
            "ips.grid": "2",
            "trainer.epochs": "1",
            "trainer.progress_bar": "false",
            "trainer.run_dir": str(Path(tmp) / "run"),
        }
        overrides.update(variant)
        if images:
            overrides["data.train_subset"] = str(images)
        t0 = time.perf_counter()
        summary = train(load_config([], overrides))
        total = time.perf_counter() - t0
        epoch = summary["train_seconds"]
        return total - epoch, epoch, int(summary["images_seen"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="training images (default: all 50,000)")
    ap.add_argument("--batch", type=int, default=64, help="pairs per step (default: 64)")
    ap.add_argument(
        "--seed-workers", type=int, default=0, help="DataLoader workers of the seed loop (default 0)"
    )
    args = ap.parse_args()
    seed = load_seed()
    data = load_cifar10() if seed is not None else None
    if data is None:
        return
    x, y = data
    files = CIFAR10_FILES
    if args.images:
        from patchswap.data import stratified_split

        _, keep = stratified_split(y, args.images, seed=0)
        x, y = x[keep], y[keep]

    theirs = seed_epoch(seed, x, y, args.batch, args.seed_workers)
    ours = {name: patchswap_epoch(files, args.images, args.batch, v) for name, v in VARIANTS.items()}
    print(f"# one IPS epoch, {len(x):,} CIFAR-10 images, resnet8, {args.batch} pairs/step ({machine()})")
    print("| loop | set-up (s) | epoch (s) | images through the network | images/s | speed-up per epoch |")
    print("|---|---|---|---|---|---|")
    rows = [("seed example loop (fp32, NCHW)", theirs)] + [
        (f"patchswap train --method ips, {k}", v) for k, v in ours.items()
    ]
    for name, (setup, epoch, n) in rows:
        print(f"| {name} | {setup:.1f} | {epoch:.1f} | {n:,} | {n / epoch:,.0f} | {theirs[1] / epoch:.2f}x |")
    print(json.dumps({"seed": theirs, **ours, "images": len(x)}))


if __name__ == "__main__":
    main()
