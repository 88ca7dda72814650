"""The training loop's own cost: `patchswap train`'s epoch against a plain PyTorch loop doing the same work.

Both sides train the same model on the same in-memory data on the same device, with the same IPS
step: pairs from ``ClassPairBatchSampler``, the batched crop/flip/normalise of ``DeviceAugment``,
the in-place swap, one forward of both views, ``IPSLoss``, backward, SGD with a per-step cosine
schedule. patchswap is the engine (``ClassificationRun`` and its Lightning trainer with the run's
callbacks: metrics.csv, last/best checkpoints, the per-epoch progress line, the run guard (signals,
non-finite losses); no validation split); the plain loop is written as a careful user would: data and
the epoch's batch indices on the device, no logging. The figure is the ratio of epoch times (start of
one epoch to the start of the next, the device synchronised at each mark; each fit's first epoch is a
warm-up and not counted; "steps alone" stops the engine's clock at the end of its last step, before
the epoch-end work: metrics.csv, the progress line and the two checkpoints of a resumable run;
"without checkpoint writes" is the whole epoch less the seconds spent in ``trainer.save_checkpoint``),
measured in one process, the two sides interleaved epoch by epoch (a plain epoch runs before each
engine epoch, so load drift on a shared machine hits both alike); each ratio is the median over the
epochs of the engine epoch divided by the plain epoch just before it, shown with the middle half
(25th to 75th percentile) of those per-epoch ratios. ``--lightning-step`` also fits
the engine with Lightning's own training step (``trainer.lean_loop false``), alternating fit by fit
with the direct step (engine/lean_loop.py), for a side-by-side row of each.

    python benchmarks/overhead.py                                # CPU: resnet8 on the 8x8 digits
    python benchmarks/overhead.py --device cuda --data npz:data/cifar10-quick.npz   # GPU rows
    python benchmarks/overhead.py --device cuda --cases 128:bf16,512:bf16:compile ...
    python benchmarks/overhead.py --lightning-step                # also Lightning's own step, alternated

A case is ``PAIRS*2:PRECISION[:compile]`` (images per step, fp32 or bf16, torch.compile or not).
``--markdown FILE`` appends the table to FILE.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from _common import machine

from patchswap.engine.config import load_config
from patchswap.engine.guard import RunGuard
from patchswap.engine.harness import quiet_lightning, run_callbacks
from patchswap.engine.training import ClassificationRun, build_bundle
from patchswap.methods import create_method
from patchswap.models import create_model
from patchswap.sampling import ClassPairBatchSampler, dataset_labels

RATIO_KEYS = ("ours", "steps", "plain", "no_ckpt")
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


class Interleave(L.Callback):
    """Runs one plain-loop epoch before each engine epoch, so load drift hits both sides alike.

    Engine epochs are timed from the end of the plain epoch to the next epoch start (or the end of
    training), the device synchronised at each mark.
    """

    def __init__(self, plain: PlainLoop, device: torch.device) -> None:
        self.plain, self.device = plain, device
        self.ours: list[float] = []
        self.steps: list[float] = []  # the engine epoch's steps alone, up to its last step's end
        self.no_ckpt: list[float] = []  # the engine's whole epoch less its checkpoint writes
        self.saving = 0.0  # seconds in trainer.save_checkpoint during the current epoch
        self.theirs: list[float] = []
        self._t0: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.done and self._t0 is not None:
            _sync(self.device)
            self.steps.append(time.perf_counter() - self._t0)

    def _close(self) -> None:
        _sync(self.device)
        if self._t0 is not None:
            self.ours.append(time.perf_counter() - self._t0)
            self.no_ckpt.append(self.ours[-1] - self.saving)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()
        with torch.enable_grad():
            self.theirs.append(self.plain.epoch(trainer.current_epoch))
        _sync(self.device)
        self.saving = 0.0
        self._t0 = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()

    def time_checkpoints(self, trainer: L.Trainer) -> None:
        """Count the seconds of every checkpoint write (best.ckpt, last.ckpt) in the epoch's total."""
        save = trainer.save_checkpoint

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return save(*args, **kwargs)
            finally:
                self.saving += time.perf_counter() - t0

        trainer.save_checkpoint = timed  # type: ignore[method-assign]


def overrides(args: argparse.Namespace, images: int, precision: str, compiled: bool, epochs: int) -> dict:
    return {
        "method": "ips",
        "ips.pairing": "partner",  # the plain loop's sampler: a partner per anchor
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


def engine_trainer(cfg, run_dir: Path, extra: list[Any]) -> tuple[ClassificationRun, L.Trainer]:
    """The run and its trainer as `patchswap train` builds them for a fit without validation: the run's
    callbacks with its run guard, then ``extra``."""
    cfg.trainer.run_dir = str(run_dir)
    run = ClassificationRun(cfg)
    run.method.prepare_training()
    guard = RunGuard(run_dir, cfg.trainer, resume_command="")
    _, callbacks = run_callbacks(run_dir, None, guard=guard)
    return run, run.trainer(run_dir, callbacks=[*callbacks, *extra])


def fit_quietly(run: ClassificationRun, trainer: L.Trainer) -> None:
    """``trainer.fit`` without the per-epoch progress lines on stdout."""
    quiet = open(os.devnull, "w")  # noqa: SIM115 - closed below
    stdout, sys.stdout = sys.stdout, quiet
    try:
        trainer.fit(run.module, datamodule=run.datamodule)
    finally:
        sys.stdout = stdout
        quiet.close()


def interleaved_epochs(
    cfg, device: torch.device, precision: str, compiled: bool
) -> tuple[list, list, list, list]:
    """One fit of the engine with a plain-loop epoch before each of its epochs; the seconds of each
    epoch after the first (a warm-up): the engine's whole epochs, their steps alone, the plain loop's,
    and the engine's whole epochs less their checkpoint writes."""
    plain = PlainLoop(cfg, device, precision, compiled)
    with tempfile.TemporaryDirectory() as tmp, quiet_lightning(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timer = Interleave(plain, device)
        run, trainer = engine_trainer(cfg, Path(tmp) / "run", [timer])
        timer.time_checkpoints(trainer)
        fit_quietly(run, trainer)
    return timer.ours[1:], timer.steps[1:], timer.theirs[1:], timer.no_ckpt[1:]


class PlainLoop:
    """The same training written as a plain loop: data and each epoch's batch indices on the device."""

    def __init__(self, cfg, device: torch.device, precision: str, compiled: bool) -> None:
        torch.manual_seed(cfg.trainer.seed)
        bundle = build_bundle(cfg)
        train = bundle.train
        self.device = device
        self.images = train.images.to(device)
        self.labels = train.targets.to(device)
        self.augment = bundle.train_augment.to(device)
        model = create_model(cfg.model.name, bundle.num_classes, in_chans=bundle.in_chans).to(device)
        self.model = model.to(memory_format=torch.channels_last).train()
        method = create_method("ips", num_classes=bundle.num_classes, num_samples=len(train)).to(device)
        self.swap, self.loss_fn = method.swap, method.loss_fn
        self.net = torch.compile(self.model) if compiled else self.model
        o = cfg.optim
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
        self.sampler = ClassPairBatchSampler(
            dataset_labels(train), cfg.data.batch_size, seed=cfg.trainer.seed
        )
        total = cfg.trainer.epochs * len(self.sampler)

        def cosine(step: int) -> float:
            return 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, cosine)
        self.gen = torch.Generator(device=device).manual_seed(cfg.trainer.seed)
        self.bf16 = precision == "bf16"
        self.n = cfg.data.batch_size

    def epoch(self, epoch: int) -> float:
        """Train one epoch; its seconds (device synchronised at both ends)."""
        n, dev = self.n, self.device
        _sync(dev)
        t0 = time.perf_counter()
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.long).to(dev, non_blocking=True)
        for idx in order:
            x = self.augment(self.images[idx], generator=self.gen).contiguous(
                memory_format=torch.channels_last
            )
            self.swap.swap_batch(x, self.gen, inplace=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.net(x)
                loss = self.loss_fn(logits[:n], logits[n:], self.labels[idx[:n]]).loss
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
        _sync(dev)
        return time.perf_counter() - t0


STEPS_OF = {"direct": "true", "Lightning": "false"}  # training step -> trainer.lean_loop


def case_rows(
    args: argparse.Namespace, device: torch.device, images: int, precision: str, compiled: bool
) -> list[str]:
    """The table rows of one case: the direct step, and Lightning's with ``--lightning-step``."""
    variants = list(STEPS_OF) if args.lightning_step else ["direct"]

    def cfg_for(variant: str) -> Any:
        extra = {"trainer.lean_loop": STEPS_OF[variant]}
        return load_config(None, {**overrides(args, images, precision, compiled, args.epochs), **extra})

    # Per variant: the seconds of each engine epoch, its steps, the plain epoch just before it, and the
    # engine epoch less its checkpoint writes.
    got: dict[str, dict[str, list[float]]] = {v: {k: [] for k in RATIO_KEYS} for v in variants}
    for r in range(args.rounds):
        for variant in variants if r % 2 == 0 else variants[::-1]:  # alternate which goes first
            o, st, p, nc = interleaved_epochs(cfg_for(variant), device, precision, compiled)
            for key, values in zip(RATIO_KEYS, (o, st, p, nc), strict=True):
                got[variant][key] += values
    n_steps = len(
        ClassPairBatchSampler(dataset_labels(build_bundle(cfg_for("direct")).train), images // 2, seed=0)
    )
    rows = []
    for variant in variants:
        g = got[variant]

        def ratios(key: str, g: dict = g) -> list[float]:
            return [a / b for a, b in zip(g[key], g["plain"], strict=True)]

        def over_plain(key: str) -> float:
            return statistics.median(ratios(key))

        whole = ratios("ours")
        # The middle half of the per-epoch ratios: how far one epoch's figure moves on this machine.
        q1, _, q3 = statistics.quantiles(whole, n=4) if len(whole) > 1 else (whole[0],) * 3

        o, st, p = (statistics.median(g[k]) for k in ("ours", "steps", "plain"))
        rows.append(
            f"| {args.device} | {args.model} | {images} | {precision} | {'yes' if compiled else 'no'} "
            f"| {variant} | {n_steps} | {p:.4f} | {o:.4f} | **{over_plain('ours'):.3f}x** "
            f"| {q1:.3f}-{q3:.3f} | {over_plain('no_ckpt'):.3f}x | {st:.4f} | {over_plain('steps'):.3f}x |"
        )
    return rows


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--data", default=None, help="dataset (default: digits; CUDA: the quick CIFAR-10 subset)")
    ap.add_argument("--model", default=None, help="model (default: resnet8 on CPU, resnet18 on CUDA)")
    ap.add_argument("--cases", default=None, help="comma-separated IMAGES:fp32|bf16[:compile]")
    ap.add_argument("--rounds", type=int, default=3, help="fits per case (plain and engine epochs alternate)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per fit (the first is a warm-up)")
    ap.add_argument("--markdown", default=None, help="append the table to this file")
    ap.add_argument(
        "--lightning-step",
        action="store_true",
        help="also fit with Lightning's own training step (trainer.lean_loop false), alternating fits",
    )
    args = ap.parse_args()
    defaults = CUDA_DEFAULT if args.device == "cuda" else CPU_DEFAULT
    args.data = args.data or defaults["data"]
    args.model = args.model or defaults["model"]
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("no CUDA device visible")
        torch.backends.cudnn.benchmark = True
        where = f"{torch.cuda.get_device_name(device)}; {cpu_model()}, {machine()}"
    else:
        where = f"{cpu_model()}, {machine()}"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    lines = [
        f"# `{' '.join(['python', *sys.argv])}`",
        f"# {where}; load average {' '.join(f'{v:.2f}' for v in load) if load else 'n/a'}",
        f"# {args.model} on {args.data}, ips, {args.rounds} rounds x {args.epochs - 1} timed epochs per side",
        "",
        "| device | model | images/step | precision | compile | training step | steps/epoch "
        "| plain loop epoch (s) | patchswap epoch (s) | patchswap / plain "
        "| middle half of the epochs' ratios | without checkpoint writes "
        "| patchswap steps alone (s) | steps / plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for case in (args.cases or defaults["cases"]).split(","):
        images_s, precision, *rest = case.strip().split(":")
        images, compiled = int(images_s), rest == ["compile"]

        for row in case_rows(args, device, images, precision, compiled):
            print(row, flush=True)
            lines.append(row)
        if args.markdown:  # row by row: a run stopped at its time limit keeps the rows it finished
            with open(args.markdown, "a") as f:
                f.write("\n".join(lines) + "\n")
            lines = []


if __name__ == "__main__":
    main()
