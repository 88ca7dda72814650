"""Where a `patchswap train` epoch spends its time besides the model: milliseconds per epoch of each
epoch-end hook (checkpoint writes, metrics.csv, the run guard, the progress line) and of each part of the
direct training step (the data fetch, each per-step hook, Lightning's logger bookkeeping, the
method's work and what the module adds around it).

The run is the CPU case of ``overhead.py`` (resnet8 on the 8x8 digits, ips, 64 images per step, no
validation, the run guard and the run's callbacks); each piece is wrapped in a ``perf_counter``
timer, which adds about a microsecond per call, so the per-step rows are upper bounds. The first
epoch (a warm-up) is left out.

    OMP_NUM_THREADS=1 python benchmarks/epoch_costs.py --epochs 11
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from _common import machine
from overhead import CPU_DEFAULT, engine_trainer, fit_quietly, overrides

from patchswap.engine.config import load_config
from patchswap.engine.harness import quiet_lightning
from patchswap.engine.training import ClassificationRun

EPOCH_HOOKS = ("on_train_epoch_start", "on_train_epoch_end")


class Clock:
    """Seconds and calls per name, counted from the second epoch on."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()
        self.on = False

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return fn(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed

    def patch(self, obj: Any, attribute: str, name: str) -> None:
        setattr(obj, attribute, self.wrap(name, getattr(obj, attribute)))


def instrument(clock: Clock, trainer: L.Trainer, run: ClassificationRun) -> None:
    """Timers around the epoch's hooks, the step's parts and the method's work."""
    for cb in trainer.callbacks:
        for hook in EPOCH_HOOKS:
            if getattr(type(cb), hook) is not getattr(L.Callback, hook):
                clock.patch(cb, hook, f"epoch: {type(cb).__name__}.{hook}")
    clock.patch(trainer, "save_checkpoint", "epoch: checkpoint writes (save_checkpoint, in the above)")
    module, loop = run.module, trainer.fit_loop.epoch_loop
    for hook in EPOCH_HOOKS:
        clock.patch(module, hook, f"epoch: module.{hook}")
    clock.patch(module, "_log_epoch_means", "epoch: the training means published (at the last step)")
    clock.patch(loop, "_lean_advance", "step: the whole step")
    clock.patch(loop, "_optimize", "step: training_step + zero_grad + backward + optimizer step")
    clock.patch(module, "training_step", "step: training_step")
    clock.patch(module.method, "forward", "step: the method (swap, forward, loss, parts)")
    clock.patch(module.model, "forward", "step: the model's forward")
    clock.patch(module.train_augment, "forward", "step: augmentation (on_after_batch_transfer)")
    clock.patch(module._epoch_sums, "add", "step: the step's values summed on the device")
    for name in ("on_batch_start", "on_batch_end", "update_train_step_metrics"):
        clock.patch(trainer._logger_connector, name, f"step: Lightning's logger {name}")
    clock.patch(loop, "_step_schedulers", "step: schedulers")
    hook = loop._hook

    def timed_hook(name: str, *args: Any) -> Any:
        return clock.wrap(f"step: hook {name}", hook)(name, *args)

    loop._hook = timed_hook  # type: ignore[method-assign]
    clock.patch(loop, "_next_batch", "step: the next batch")
    backward = torch.Tensor.backward
    torch.Tensor.backward = clock.wrap("step: backward", backward)  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=11, help="epochs (the first is a warm-up)")
    args = ap.parse_args()
    # overhead.py's CPU case: its config, so both scripts time the same run.
    case = argparse.Namespace(data=CPU_DEFAULT["data"], model=CPU_DEFAULT["model"], device="cpu")
    cfg = load_config(None, overrides(case, 64, "fp32", compiled=False, epochs=args.epochs))
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp, quiet_lightning(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run, trainer = engine_trainer(cfg, Path(tmp) / "run", [])
        fit_loop = trainer.fit_loop
        clock.patch(fit_loop, "advance", "epoch: the training steps (fit loop advance)")
        clock.patch(fit_loop, "on_advance_start", "epoch: epoch start (fit loop on_advance_start)")
        clock.patch(fit_loop, "on_advance_end", "epoch: epoch end (fit loop on_advance_end)")
        instrument(clock, trainer, run)
        start = fit_loop.on_advance_start

        def start_after_warmup() -> None:
            clock.on = trainer.current_epoch >= 1
            start()

        fit_loop.on_advance_start = start_after_warmup  # type: ignore[method-assign]
        fit_quietly(run, trainer)
    epochs = clock.calls["epoch: the training steps (fit loop advance)"]
    steps = clock.calls["step: the whole step"]
    print(f"# `{' '.join(['python', *sys.argv])}`")
    print(f"# {machine()}; {epochs} timed epochs of {steps // max(1, epochs)} steps")
    for part, title in (("epoch", "per epoch"), ("step", "inside the steps (summed over the epoch)")):
        print(f"\n| {title} | ms per epoch | calls per epoch | ms per call |\n|---|---|---|---|")
        for name in sorted((n for n in clock.seconds if n.startswith(part)), key=lambda n: -clock.seconds[n]):
            what = name.split(":", 1)[1].strip()
            seconds, calls = clock.seconds[name], clock.calls[name]
            per_epoch, per_call = 1e3 * seconds / epochs, 1e3 * seconds / calls
            print(f"| {what} | {per_epoch:.2f} | {calls / epochs:g} | {per_call:.3f} |")


if __name__ == "__main__":
    main()
