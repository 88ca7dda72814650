"""What mid-epoch checkpoints cost: one checkpoint's time and size, and the epoch-time overhead.

1. One checkpoint (weights + SGD momentum, through the run's atomic checkpoint I/O with fsync) of
   ``resnet18`` for CIFAR-100 (32x32) and of torchvision's ResNet-50 (224x224, 1000 classes),
   random init: median seconds of ``--repeats`` writes, and megabytes.
2. The epoch-time overhead of ``trainer.checkpoint_every_n_steps``: the same small training run
   (digits, resnet8) with several values, all in this one process, each epoch's training time taken
   from metrics.csv; the ratio is against no mid-epoch checkpoints (0), measured in the same run.

    python benchmarks/bench_checkpoint.py
    python benchmarks/bench_checkpoint.py --every 0,50,10,2 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import machine

from patchswap.engine.checkpoint import AtomicCheckpointIO


def one_checkpoint(name: str, model: torch.nn.Module, image: int, repeats: int, folder: Path) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, image, image)).sum().backward()
    opt.step()  # the momentum buffers exist, as in a real checkpoint
    ckpt = {"state_dict": model.state_dict(), "optimizer_states": [opt.state_dict()], "epoch": 0}
    path = folder / f"{name}.ckpt"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        AtomicCheckpointIO().save_checkpoint(ckpt, path)
        times.append(time.perf_counter() - t0)
    return {"model": name, "seconds": statistics.median(times), "mb": path.stat().st_size / 2**20}


def overhead(values: list[int], epochs: int, folder: Path) -> list[dict]:
    from patchswap.engine import train
    from patchswap.engine.callbacks import read_metrics
    from patchswap.engine.config import load_config

    rows = []
    for every in values:
        run_dir = folder / f"every{every}"
        cfg = load_config(
            None,
            {
                "data.name": "digits",
                "model.name": "resnet8",
                "data.batch_size": "32",
                "method": "ce",
                "trainer.epochs": str(epochs),
                "trainer.progress_bar": "false",
                "trainer.accelerator": "cpu",
                "trainer.precision": "32-true",
                "trainer.checkpoint_every_n_steps": str(every),
                "trainer.run_dir": str(run_dir),
            },
        )
        train(cfg)
        seconds = [float(r["train/epoch_seconds"]) for r in read_metrics(run_dir / "metrics.csv")]
        rows.append(
            {
                "every": every,
                "epoch_s": statistics.median(seconds),
                "steps": int(read_metrics(run_dir / "metrics.csv")[0]["step"]),
            }
        )
    base = rows[0]["epoch_s"]
    for r in rows:
        r["ratio"] = r["epoch_s"] / base
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--every", default="0,20,5,1", help="checkpoint_every_n_steps values; the first is the base"
    )
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--skip-sizes", action="store_true")
    args = p.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.skip_sizes:
            import torchvision

            from patchswap.models import create_model

            for name, model, image in (
                ("resnet18 CIFAR-100 32x32", create_model("resnet18", 100, in_chans=3), 32),
                ("torchvision resnet50 224x224", torchvision.models.resnet50(num_classes=1000), 224),
            ):
                r = one_checkpoint(name.split()[0] + name.split()[1], model, image, args.repeats, folder)
                print(f"{name:<32} {r['seconds']:.3f} s per checkpoint, {r['mb']:.1f} MB")
        values = [int(v) for v in args.every.split(",")]
        for r in overhead(values, args.epochs, folder):
            print(
                f"checkpoint_every_n_steps={r['every']:<4} epoch {r['epoch_s']:.3f} s ({r['steps']} steps) "
                f"ratio {r['ratio']:.3f}"
            )


if __name__ == "__main__":
    main()
