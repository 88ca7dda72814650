"""The training loop's own cost: `patchswap train`'s epoch against a plain PyTorch loop doing the same work.

Both sides train the same model on the same in-memory data on the same device, with the same IPS
step: pairs from ``ClassPairBatchSampler``, the batched crop/flip/normalise of ``DeviceAugment``,
the in-place swap, one forward of both views, ``IPSLoss``, backward, SGD with a per-step cosine
schedule. patchswap is the engine (``ClassificationRun`` and its Lightning trainer with the run's
callbacks: metrics.csv, last/best checkpoints, the per-epoch progress line; no validation split);
the plain loop is written as a careful user would: data and the epoch's batch indices on the device,
no logging. The figure is the ratio of epoch times (start of one epoch to the start of the next,
the device synchronised at each mark; each fit's first epoch is a warm-up and not counted),
measured in one process, the two sides interleaved round by round; medians are reported.

    python benchmarks/overhead.py                                # CPU: resnet8 on the 8x8 digits
    python benchmarks/overhead.py --device cuda --data npz:data/cifar10-quick.npz   # GPU rows
    python benchmarks/overhead.py --device cuda --cases 128:bf16,512:bf16:compile ...

A case is ``PAIRS*2:PRECISION[:compile]`` (images per step, fp32 or bf16, torch.compile or not).
``--markdown FILE`` appends the table to FILE.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from _common import machine

from patchswap.engine.config import load_config
from patchswap.engine.harness import quiet_lightning, run_callbacks
from patchswap.engine.training import ClassificationRun, build_bundle
from patchswap.methods import create_method
from patchswap.models import create_model
from patchswap.sampling import ClassPairBatchSampler, dataset_labels

CPU_DEFAULT = {"data": "digits", "model": "resnet8", "cases": "64:fp32,64:bf16"}
CUDA_DEFAULT = {
    "data": "npz:data/cifar10-quick.npz",
    "model": "resnet18",
    "cases": "128:fp32,128:bf16,512:fp32,512:bf16,128:fp32:compile,128:bf16:compile,512:fp32:compile,"
    "512:bf16:compile",
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochMarks(L.Callback):
    """Device-synchronised wall-clock marks at every epoch start and at the end of training."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.marks = device, []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(self.device)
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(self.device)
        self.marks.append(time.perf_counter())


def overrides(args: argparse.Namespace, images: int, precision: str, compiled: bool, epochs: int) -> dict:
    return {
        "method": "ips",
        "data.name": args.data,
        "data.val_split": "0",
        "data.batch_size": str(images // 2),
        "model.name": args.model,
        "model.compile": str(compiled).lower(),
        "trainer.precision": "bf16-mixed" if precision == "bf16" else "32-true",
        "trainer.accelerator": "gpu" if args.device == "cuda" else "cpu",
        "trainer.epochs": str(epochs),
        "trainer.progress_bar": "false",
        "trainer.seed": "0",
    }


def engine_epochs(cfg, device: torch.device) -> list[float]:
    """One fit of the engine; seconds of each epoch after the first."""
    with tempfile.TemporaryDirectory() as tmp, quiet_lightning(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg.trainer.run_dir = str(Path(tmp) / "run")
        run = ClassificationRun(cfg)
        run.method.prepare_training()
        _, callbacks = run_callbacks(Path(cfg.trainer.run_dir), None)
        marks = EpochMarks(device)
        trainer = run.trainer(Path(cfg.trainer.run_dir), callbacks=[*callbacks, marks])
        quiet = open(os.devnull, "w")  # noqa: SIM115 - the per-epoch progress lines
        stdout, sys.stdout = sys.stdout, quiet
        try:
            trainer.fit(run.module, datamodule=run.datamodule)
        finally:
            sys.stdout = stdout
            quiet.close()
    times = [b - a for a, b in zip(marks.marks, marks.marks[1:], strict=False)]
    return times[1:]


def plain_epochs(cfg, device: torch.device, precision: str, compiled: bool, epochs: int) -> list[float]:
    """The same training written as a plain loop; seconds of each epoch after the first."""
    L.seed_everything(cfg.trainer.seed, verbose=False)
    bundle = build_bundle(cfg)
    train = bundle.train
    images = train.images.to(device)
    labels = train.targets.to(device)
    augment = bundle.train_augment.to(device)
    model = create_model(cfg.model.name, bundle.num_classes, in_chans=bundle.in_chans).to(device)
    model = model.to(memory_format=torch.channels_last)
    method = create_method("ips", num_classes=bundle.num_classes, num_samples=len(train)).to(device)
    swap, loss_fn = method.swap, method.loss_fn
    net = torch.compile(model) if compiled else model
    o = cfg.optim
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    sampler = ClassPairBatchSampler(dataset_labels(train), cfg.data.batch_size, seed=cfg.trainer.seed)
    total = epochs * len(sampler)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    gen = torch.Generator(device=device).manual_seed(cfg.trainer.seed)
    bf16 = precision == "bf16"
    n = cfg.data.batch_size
    model.train()
    marks = []
    for epoch in range(epochs):
        _sync(device)
        marks.append(time.perf_counter())
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.long).to(device, non_blocking=True)
        for idx in order:
            x = augment(images[idx], generator=gen).contiguous(memory_format=torch.channels_last)
            swap.swap_batch(x, gen, inplace=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(x)
                loss = loss_fn(logits[:n], logits[n:], labels[idx[:n]]).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    _sync(device)
    marks.append(time.perf_counter())
    times = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return times[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--data", default=None, help="dataset (default: digits on CPU, the quick CIFAR-10 subset on CUDA)")
    ap.add_argument("--model", default=None, help="model (default: resnet8 on CPU, resnet18 on CUDA)")
    ap.add_argument("--cases", default=None, help="comma-separated IMAGES:fp32|bf16[:compile]")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one fit of each side per round)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per fit (the first is a warm-up)")
    ap.add_argument("--markdown", default=None, help="append the table to this file")
    args = ap.parse_args()
    defaults = CUDA_DEFAULT if args.device == "cuda" else CPU_DEFAULT
    args.data = args.data or defaults["data"]
    args.model = args.model or defaults["model"]
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("no CUDA device visible")
        torch.backends.cudnn.benchmark = True
        where = f"{torch.cuda.get_device_name(device)}, {machine()}"
    else:
        where = machine()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    lines = [
        f"# `{' '.join(['python', *sys.argv])}`",
        f"# {where}; load average {' '.join(f'{v:.2f}' for v in load) if load else 'n/a'}",
        f"# {args.model} on {args.data}, ips, {args.rounds} rounds x {args.epochs - 1} timed epochs per side",
        "",
        "| device | model | images/step | precision | compile | steps/epoch | plain loop epoch (s) "
        "| patchswap epoch (s) | patchswap / plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for case in (args.cases or defaults["cases"]).split(","):
        images_s, precision, *rest = case.strip().split(":")
        images, compiled = int(images_s), rest == ["compile"]
        cfg = load_config(None, overrides(args, images, precision, compiled, args.epochs))
        ours: list[float] = []
        plain: list[float] = []
        for _ in range(args.rounds):
            ours += engine_epochs(load_config(None, overrides(args, images, precision, compiled, args.epochs)), device)
            plain += plain_epochs(cfg, device, precision, compiled, args.epochs)
        steps = len(ClassPairBatchSampler(dataset_labels(build_bundle(cfg).train), images // 2, seed=0))
        o, p = statistics.median(ours), statistics.median(plain)
        row = (
            f"| {args.device} | {args.model} | {images} | {precision} | {'yes' if compiled else 'no'} | {steps} "
            f"| {p:.4f} | {o:.4f} | **{o / p:.3f}x** |"
        )
        print(row, flush=True)
        lines.append(row)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
