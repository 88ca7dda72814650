"""The direct training step (engine/lean_loop.py) against Lightning's own step.

The same run trained both ways (32-true and bf16-mixed) must end with the same weights, optimizer
and loop state (the progress counters a resume reads), the same training means in metrics.csv and
the same hooks called in the same order with the same arguments; runs outside the common case must
step Lightning's way.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from patchswap.engine.config import load_config
from patchswap.engine.harness import quiet_lightning, run_callbacks
from patchswap.engine.lean_loop import LeanEpochLoop, install_lean_loop
from patchswap.engine.training import ClassificationRun

pytestmark = pytest.mark.usefixtures("single_thread")


class HookRecorder(L.Callback):
    """Records every per-step hook with what it can see: step, epoch, the module's hook name, lr, loss."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def _record(self, name: str, trainer: L.Trainer, module: L.LightningModule, extra: Any = None) -> None:
        loop = trainer.fit_loop.epoch_loop
        counters = (loop.batch_progress.current.ready, loop.batch_progress.current.completed)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.calls.append(
            (name, trainer.global_step, trainer.current_epoch, module._current_fx_name, counters, lr, extra)
        )

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._record("on_train_batch_start", trainer, module, batch_idx)

    def on_before_zero_grad(self, trainer, module, optimizer):
        self._record("on_before_zero_grad", trainer, module, optimizer is trainer.optimizers[0])

    def on_before_backward(self, trainer, module, loss):
        self._record("on_before_backward", trainer, module, round(loss.item(), 6))

    def on_after_backward(self, trainer, module):
        grad = next(p.grad for p in module.parameters() if p.grad is not None)
        self._record("on_after_backward", trainer, module, round(grad.abs().sum().item(), 5))

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self._record("on_before_optimizer_step", trainer, module, optimizer is trainer.optimizers[0])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._record(
            "on_train_batch_end", trainer, module, (sorted(outputs), round(outputs["loss"].item(), 6))
        )


def _fit(
    tmp_path: Path, tiny_overrides, lean: bool, **extra: str
) -> tuple[dict, HookRecorder, LeanEpochLoop]:
    cfg = load_config(
        None, tiny_overrides(tmp_path / f"lean-{lean}", trainer__lean_loop=str(lean).lower(), **extra)
    )
    run = ClassificationRun(cfg)
    run.method.prepare_training()
    recorder = HookRecorder()
    run_dir = Path(cfg.trainer.run_dir)
    _, callbacks = run_callbacks(run_dir, "val/acc")
    with quiet_lightning():
        trainer = run.trainer(run_dir, callbacks=[*callbacks, recorder])
        trainer.fit(run.module, datamodule=run.datamodule)
    loop = trainer.fit_loop.epoch_loop
    assert isinstance(loop, LeanEpochLoop)
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False), recorder, loop


def _train_means(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    clock = ("train/epoch_seconds", "train/images_per_s")
    return [
        {k: v for k, v in row.items() if (k.startswith("train/") or k == "lr") and k not in clock}
        for row in rows
    ]


@pytest.mark.parametrize(
    ("method", "precision"), [("ips", "32-true"), ("pskd", "32-true"), ("ips", "bf16-mixed")]
)
def test_the_direct_step_trains_exactly_as_lightnings_step(method, precision, tiny_overrides, tmp_path):
    kw = {"method": method, "trainer__precision": precision}
    lean_ckpt, lean_hooks, lean_loop = _fit(tmp_path, tiny_overrides, True, **kw)
    ref_ckpt, ref_hooks, ref_loop = _fit(tmp_path, tiny_overrides, False, **kw)

    steps = lean_ckpt["global_step"]
    assert steps > 0 and lean_loop.lean_steps == steps and lean_loop.blocker is None
    assert lean_loop._direct_fetch  # the engine's one loader: batches straight from its iterator
    assert ref_loop.lean_steps == 0 and ref_loop.blocker == "trainer.lean_loop is off"
    for key, value in ref_ckpt["state_dict"].items():
        assert torch.equal(lean_ckpt["state_dict"][key], value), key
    for i, state in ref_ckpt["optimizer_states"][0]["state"].items():
        assert torch.equal(
            lean_ckpt["optimizer_states"][0]["state"][i]["momentum_buffer"], state["momentum_buffer"]
        )
    assert lean_ckpt["loops"] == ref_ckpt["loops"]  # every progress counter a resume reads
    assert lean_ckpt["lr_schedulers"] == ref_ckpt["lr_schedulers"]
    assert _train_means(tmp_path / "lean-True") == _train_means(tmp_path / "lean-False")
    recorded = [name for name in vars(HookRecorder) if name.startswith("on_")]  # the six per-step hooks
    assert len(recorded) == 6 and len(lean_hooks.calls) == steps * len(recorded)
    assert lean_hooks.calls == ref_hooks.calls  # names, order, counters, lr, loss, gradients


class _Tiny(L.LightningModule):
    """A linear classifier on random data, to try Lightning's options the engine never sets."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(8, 3)
        self.stop_at: int | None = None
        self.none_at: int | None = None

    def training_step(self, batch, batch_idx):
        if batch_idx == self.none_at:
            return None
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def on_train_batch_start(self, batch, batch_idx):
        return -1 if batch_idx == self.stop_at else None

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 3), "interval": "step"},
        }

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(
            torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
        )
        return torch.utils.data.DataLoader(data, batch_size=8)


class _OwnStep(_Tiny):
    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)


def _fit_tiny(module: _Tiny, lean: bool, **trainer_kwargs: Any) -> LeanEpochLoop:
    with quiet_lightning():
        options: dict[str, Any] = dict(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer = L.Trainer(**{**options, **trainer_kwargs})
        loop = install_lean_loop(trainer, enabled=lean)
        trainer.fit(module)
    return loop


class _Logged(_Tiny):
    """Logs from its training step (Lightning's logger bookkeeping at every step)."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("step_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss


class _TwoLoaders(_Tiny):
    """A collection of loaders: each batch is a dict of both (Lightning's combined loader unflattens it)."""

    def training_step(self, batch, batch_idx):
        return super().training_step(batch["a"], batch_idx) + super().training_step(batch["b"], batch_idx)

    def train_dataloader(self):
        loader = super().train_dataloader()
        return {"a": loader, "b": torch.utils.data.DataLoader(loader.dataset, batch_size=16)}


class _ShortStream(torch.utils.data.IterableDataset):
    """A stream whose length says 64 samples but which runs out after 40: the loader ends early."""

    def __init__(self, data: torch.utils.data.TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return (self.data[i] for i in range(40))


class _ShortLoader(_Tiny):
    def train_dataloader(self):
        return torch.utils.data.DataLoader(_ShortStream(super().train_dataloader().dataset), batch_size=8)


class _FetchCounters(L.Callback):
    """The fetcher's and the combined loader's counters at each epoch's end (what Lightning reads next)."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        fetcher = trainer.fit_loop._data_fetcher
        cycle = fetcher.iterator._iterator
        self.seen.append((fetcher.fetched, fetcher.done, cycle._idx, list(cycle._consumed)))


@pytest.mark.parametrize(
    ("make", "kwargs", "direct"),
    [
        (_Tiny, {}, True),
        (_Tiny, {"limit_train_batches": 5}, True),
        (_ShortLoader, {}, True),
        (_Logged, {}, True),
        (_TwoLoaders, {}, False),
    ],
    ids=["one loader", "limited batches", "a loader that ends early", "logging every step", "two loaders"],
)
def test_batches_and_logged_values_come_as_through_lightnings_fetcher_and_logger(
    make, kwargs, direct, tmp_path, monkeypatch
):
    """The direct step takes one loader's batches from its iterator (not through Lightning's fetcher,
    combined loader and pytree) and leaves out the logger bookkeeping when nothing was logged; the
    counters Lightning reads next, the logged values and the weights are the same as its own step's."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

    batch_ends = []  # Lightning's per-batch logger bookkeeping, called or left out
    on_batch_end = _LoggerConnector.on_batch_end

    def counted(self: _LoggerConnector) -> None:
        batch_ends.append(1)
        on_batch_end(self)

    monkeypatch.setattr(_LoggerConnector, "on_batch_end", counted)
    got = []
    for lean in (True, False):
        batch_ends.clear()
        module, counters = make(), _FetchCounters()
        logger = CSVLogger(tmp_path, name=str(lean), version=0)
        loop = _fit_tiny(module, lean, callbacks=[counters], logger=logger, log_every_n_steps=2, **kwargs)
        assert (loop.lean_steps > 0) == lean
        trainer = module.trainer
        logs = make is _Logged or not lean  # the direct step calls it only once something was logged
        assert len(batch_ends) == (trainer.global_step if logs else 0)
        metrics = (trainer.logged_metrics, trainer.callback_metrics, trainer.progress_bar_metrics)
        csv_file = tmp_path / str(lean) / "version_0" / "metrics.csv"  # none when nothing was logged
        csv_text = csv_file.read_text() if csv_file.exists() else ""
        got.append((loop, counters.seen, metrics, csv_text, _weights(module), loop.state_dict()))
    (lean_loop, *lean_rest), (_, *ref_rest) = got
    assert lean_loop._direct_fetch is direct
    lean_seen, lean_metrics, lean_csv, lean_weights, lean_state = lean_rest
    ref_seen, ref_metrics, ref_csv, ref_weights, ref_state = ref_rest
    assert lean_seen == ref_seen and len(lean_seen) == 2
    assert lean_state == ref_state
    for a, b in zip(lean_weights, ref_weights, strict=True):
        assert torch.equal(a, b)
    for lean_values, ref_values in zip(lean_metrics, ref_metrics, strict=True):
        assert lean_values.keys() == ref_values.keys()
        for key, value in ref_values.items():
            assert torch.equal(torch.as_tensor(lean_values[key]), torch.as_tensor(value)), key
    assert lean_csv == ref_csv
    assert ("step_loss_step" in ref_csv) == (make is _Logged)


def _weights(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize(
    ("make", "kwargs", "why"),
    [
        (_Tiny, {"accumulate_grad_batches": 2}, "gradient accumulation"),
        (_Tiny, {"gradient_clip_val": 1.0}, "gradient clipping"),
        (_OwnStep, {}, "the module overrides optimizer_step"),
    ],
)
def test_runs_outside_the_common_case_step_lightnings_way(make, kwargs, why):
    loop = _fit_tiny(make(), True, **kwargs)
    assert loop.blocker == why and loop.lean_steps == 0


@pytest.mark.parametrize(
    ("attribute", "at"),
    [("stop_at", 3), ("none_at", 2)],
    ids=["on_train_batch_start -1 ends the epoch", "training_step None skips the update"],
)
def test_a_module_ending_its_epoch_or_skipping_a_step_does_so_as_in_lightning(attribute, at):
    modules = []
    for lean in (True, False):
        module = _Tiny()
        setattr(module, attribute, at)
        loop = _fit_tiny(module, lean)
        assert (loop.lean_steps > 0) == lean
        modules.append((module, loop))
    (lean_module, lean_loop), (ref_module, ref_loop) = modules
    assert lean_loop.state_dict() == ref_loop.state_dict()
    assert lean_module.trainer.global_step == ref_module.trainer.global_step
    for a, b in zip(_weights(lean_module), _weights(ref_module), strict=True):
        assert torch.equal(a, b)
    assert (
        lean_module.trainer.optimizers[0].param_groups[0]["lr"]
        == ref_module.trainer.optimizers[0].param_groups[0]["lr"]
    )


@pytest.mark.parametrize(("every", "steps"), [(None, [8, 16]), (3, [3, 6, 9, 12, 15])])
def test_checkpoints_inside_an_epoch_are_still_saved_and_epoch_end_ones_skip_the_step(every, steps, tmp_path):
    """A ModelCheckpoint that saves every n steps keeps its per-step hook under the direct step; one
    that saves at epoch ends only is left out of the step (its hook would return without acting).
    Either way it saves at the steps it saves at under Lightning's step (8 steps an epoch, 2 epochs)."""
    for lean in (True, False):
        saves = []
        checkpoint = ModelCheckpoint(dirpath=tmp_path / str(lean), every_n_train_steps=every, save_top_k=-1)
        save = checkpoint._save_checkpoint

        def counted(trainer: L.Trainer, path: str, saves: list = saves, save: Any = save) -> None:
            saves.append(trainer.global_step)
            save(trainer, path)

        checkpoint._save_checkpoint = counted
        loop = _fit_tiny(_Tiny(), lean, callbacks=[checkpoint], enable_checkpointing=True)
        assert (loop.lean_steps > 0) == lean
        assert saves == steps, f"lean={lean}"
        if lean:
            per_step = loop._callback_hooks["on_train_batch_end"]
            assert (checkpoint.on_train_batch_end in per_step) == bool(every)


def test_a_batch_already_on_the_device_is_kept_and_any_other_is_moved():
    from patchswap.engine.lean_loop import _to_device

    cpu = torch.device("cpu")
    on = (torch.zeros(2), torch.ones(2, dtype=torch.long))
    assert _to_device(on, cpu) is on  # nothing to move: the very batch, no copy of the tuple
    listed = [*on]
    assert _to_device(listed, cpu) is listed
    mixed = {"x": torch.zeros(2).double(), "meta": "name"}  # another collection: Lightning's walk
    moved = _to_device(mixed, cpu)
    assert moved["meta"] == "name" and torch.equal(moved["x"], mixed["x"])
    meta = torch.zeros(2, device="meta")  # a tensor elsewhere is moved (to the CPU it cannot be: raises)
    with pytest.raises((NotImplementedError, RuntimeError)):
        _to_device((meta,), cpu)


@pytest.mark.parametrize("on_nonfinite", ["stop", "skip_step"])
def test_a_hook_a_callback_calls_idle_in_this_run_is_left_out_of_the_step(on_nonfinite, tmp_path):
    """The run guard's gradient check runs only with ``on_nonfinite skip_step``: otherwise the direct
    step does not call its (immediately returning) ``on_before_optimizer_step``; its loss and stop
    checks at each batch's end stay."""
    from patchswap.engine.config import TrainerSection
    from patchswap.engine.guard import RunGuard

    guard = RunGuard(tmp_path, TrainerSection(on_nonfinite=on_nonfinite), resume_command="")
    loop = _fit_tiny(_Tiny(), True, callbacks=[guard], enable_checkpointing=True)  # the guard is a Checkpoint
    assert loop.lean_steps > 0
    per_step = loop._callback_hooks
    assert (guard.on_before_optimizer_step in per_step["on_before_optimizer_step"]) == (
        on_nonfinite == "skip_step"
    )
    assert guard.on_train_batch_end in per_step["on_train_batch_end"]
