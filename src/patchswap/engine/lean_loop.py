"""Lightning's training epoch loop with a direct step for the common case (issue 16).

Lightning's own step costs about 1 ms on a CPU whatever the model (docs/benchmarks.md): every hook
goes to every callback inside a profiler context, ``training_step``'s signature is inspected, and the
optimizer step passes through a closure and four layers (LightningOptimizer, strategy, precision
plugin, ``Closure``). :class:`LeanEpochLoop` keeps Lightning's loop (epochs, validation, restarts,
checkpoints, loggers) and replaces only ``advance``, the one training batch, by the same step written
directly, when the run allows it (:func:`lean_blocker` says why not, otherwise):

- the same hooks in Lightning's order, each called on the callbacks and the module that override it
  (a hook nobody overrides is a no-op in Lightning too), with the module's ``_current_fx_name`` set
  as Lightning sets it, so ``self.log`` behaves the same;
- the same progress counters (batch, optimizer step and zero_grad, schedulers), so checkpoints are
  the same and a run resumes exactly whichever loop wrote them;
- the same learning-rate scheduling, through Lightning's own methods, and the same logger
  bookkeeping, left out while nothing has been logged with ``self.log`` in training (it would only
  walk empty collections; the engine publishes its training values once an epoch without it);
- the same batches: one loader's (the usual fit) taken from its iterator, with the counters of
  Lightning's fetcher and combined loader kept as they would, any other through Lightning's fetcher.

The first step after a restart, and any run outside the common case (several devices, manual
optimisation, gradient accumulation or clipping, a grad scaler, a profiler, a module that overrides
how it steps), take Lightning's ``advance`` unchanged. ``trainer.lean_loop false`` turns it off.
The loop relies on Lightning's internals (``_TrainingEpochLoop``): it is used only on the Lightning
versions it was checked against (:data:`CHECKED_LIGHTNING`), where a test compares it with
Lightning's step weight for weight and counter for counter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loops.fetchers import _PrefetchDataFetcher
from lightning.pytorch.loops.optimization.automatic import Closure, ClosureResult
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.combined_loader import _MaxSizeCycle
from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature
from lightning_fabric.utilities.apply_func import move_data_to_device

__all__ = ["CHECKED_LIGHTNING", "LeanEpochLoop", "install_lean_loop", "lean_blocker"]

CHECKED_LIGHTNING = ("2.6",)
"""Lightning minor versions whose training step :class:`LeanEpochLoop` reproduces (tests/engine)."""

# The per-step hooks a callback may override, in the order Lightning calls them.
_CALLBACK_HOOKS = (
    "on_train_batch_start",
    "on_before_zero_grad",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
)
# Module methods whose default the direct step performs itself: a module that overrides one of them
# steps Lightning's way.
_MODULE_DEFAULTS = (
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "optimizer_step",
    "optimizer_zero_grad",
    "backward",
    "configure_gradient_clipping",
)


def _overrides(obj: Any, base: type, name: str) -> bool:
    """True when ``obj`` (its class or the instance itself) replaces ``base``'s method ``name``."""
    return name in vars(obj) or getattr(type(obj), name, None) is not getattr(base, name, None)


def _acts(cb: Callback, name: str) -> bool:
    """Whether callback ``cb``'s hook ``name`` can do anything: it overrides the hook, the callback does
    not list it in its ``idle_step_hooks()`` (the hooks it has nothing to do in, this run: e.g. the
    run guard's gradient check without ``trainer.on_nonfinite skip_step``), and it is not a
    ModelCheckpoint that saves only at epoch ends (no ``every_n_train_steps``, no
    ``train_time_interval``), whose per-step hook then returns without acting under automatic
    optimisation (Lightning 2.6) after a dozen checks, twice a step for the run's two checkpoints.
    Each hook left out saves a call chain of some 10 to 40 us a step on a 2-core CPU."""
    if not _overrides(cb, Callback, name):
        return False
    idle = getattr(cb, "idle_step_hooks", None)
    if idle is not None and name in idle():
        return False
    return not (
        name == "on_train_batch_end"
        and isinstance(cb, ModelCheckpoint)
        and not _overrides(cb, ModelCheckpoint, name)
        and cb._every_n_train_steps < 1
        and cb._train_time_interval is None
    )


def lean_blocker(trainer: L.Trainer) -> str | None:
    """Why the direct step cannot run this fit (None when it can)."""
    module = trainer.lightning_module
    version = ".".join(L.__version__.split(".")[:2])
    checks: list[tuple[bool, str]] = [
        (
            version not in CHECKED_LIGHTNING,
            f"Lightning {L.__version__} is not one the direct step was checked on",
        ),
        (type(trainer.strategy) is not SingleDeviceStrategy, "not a single-device strategy"),
        (not module.automatic_optimization, "manual optimisation"),
        (len(trainer.optimizers) != 1, "not exactly one optimizer"),
        (isinstance(trainer.optimizers[0], torch.optim.LBFGS), "an optimizer that needs a closure"),
        (trainer.accumulate_grad_batches != 1, "gradient accumulation"),
        (trainer.gradient_clip_val is not None, "gradient clipping"),
        (not _plain_precision(trainer.precision_plugin), "a precision plugin with a grad scaler or casts"),
        (not isinstance(trainer.profiler, PassThroughProfiler), "a profiler (it times Lightning's hooks)"),
        (trainer.strategy.model is not module, "a wrapped module"),
    ]
    for blocked, why in checks:
        if blocked:
            return why
    for name in _MODULE_DEFAULTS:
        if _overrides(module, L.LightningModule, name):
            return f"the module overrides {name}"
    return None


def _plain_precision(plugin: Any) -> bool:
    """32-true (no cast, no scaler) or a mixed precision without a grad scaler (bf16-mixed)."""
    return type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None)


class LeanEpochLoop(_TrainingEpochLoop):
    """``_TrainingEpochLoop`` whose ``advance`` runs the training step directly where it can."""

    def __init__(self, trainer: L.Trainer, min_steps: int | None = None, max_steps: int = -1) -> None:
        super().__init__(trainer, min_steps=min_steps, max_steps=max_steps)
        self.enabled = True  # trainer.lean_loop
        self.blocker: str | None = None  # why this epoch steps Lightning's way (None: direct)
        self.lean_steps = 0  # steps taken by the direct path (tests read it)
        self._callback_hooks: dict[str, list[Callable[..., Any]]] = {}
        self._module_hooks: dict[str, Callable[..., Any] | None] = {}
        self._step_takes_index = True
        self._direct_fetch = False  # this epoch's batches come straight from the one loader's iterator

    def on_run_start(self, data_fetcher: Any) -> None:
        super().on_run_start(data_fetcher)
        trainer = self.trainer
        self.blocker = lean_blocker(trainer) if self.enabled else "trainer.lean_loop is off"
        if self.blocker is not None:
            return
        module = trainer.lightning_module
        # Resolved once per epoch: the bound hooks that do something, per hook name.
        self._callback_hooks = {
            name: [getattr(cb, name) for cb in trainer.callbacks if _acts(cb, name)]
            for name in _CALLBACK_HOOKS
        }
        self._module_hooks = {
            name: getattr(module, name) if _overrides(module, L.LightningModule, name) else None
            for name in (*_CALLBACK_HOOKS, "on_after_batch_transfer")
        }
        self._step_takes_index = is_param_in_hook_signature(module.training_step, "batch_idx", min_args=2)
        self._direct_fetch = _one_plain_loader(data_fetcher)

    def advance(self, data_fetcher: Any) -> None:
        if self.blocker is not None or self.restarting:
            super().advance(data_fetcher)
            return
        self._lean_advance(data_fetcher)
        self.lean_steps += 1

    # -- the direct step: Lightning's advance (training_epoch_loop.py) with its calls made directly --
    def _hook(self, name: str, *args: Any) -> Any:
        """Hook ``name`` on the callbacks, then the module, its ``_current_fx_name`` set as Lightning does."""
        callbacks, own = self._callback_hooks[name], self._module_hooks[name]
        if not callbacks and own is None:
            return None
        return self._module_call(name, self._call_hooks, callbacks, own, args)

    def _call_hooks(
        self, callbacks: list[Callable[..., Any]], own: Callable[..., Any] | None, args: tuple
    ) -> Any:
        module = self.trainer.lightning_module
        for fn in callbacks:
            fn(self.trainer, module, *args)
        return own(*args) if own is not None else None

    def _module_call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` with the module's ``_current_fx_name`` set to ``name`` meanwhile."""
        state = self.trainer.lightning_module.__dict__  # a plain attribute: no nn.Module.__setattr__
        previous = state.get("_current_fx_name")
        state["_current_fx_name"] = name
        try:
            return fn(*args)
        finally:
            state["_current_fx_name"] = previous

    def _lean_advance(self, data_fetcher: Any) -> None:
        trainer = self.trainer
        progress = self.batch_progress
        batch = self._next_batch(data_fetcher)
        batch_idx = self.batch_idx + 1
        progress.is_last_batch = data_fetcher.done

        batch = trainer.precision_plugin.convert_input(batch)
        batch = _to_device(batch, trainer.strategy.root_device)
        after_transfer = self._module_hooks["on_after_batch_transfer"]
        if after_transfer is not None:
            batch = self._module_call("on_after_batch_transfer", after_transfer, batch, 0)
        progress.increment_ready()
        trainer._logger_connector.on_batch_start(batch)

        output: dict[str, Any] | None = None
        skip_rest = False
        if batch is None:
            self._warning_cache.warn(
                "train_dataloader yielded None. If this was on purpose, ignore this warning..."
            )
        else:
            skip_rest = self._hook("on_train_batch_start", batch, batch_idx) == -1
            if skip_rest:
                progress.increment_by(0, is_last_batch=True)
            else:
                progress.increment_started()
                output = self._optimize(batch, batch_idx)

        progress.increment_processed()
        self._step_schedulers("step")
        if self._num_ready_batches_reached():
            self._step_schedulers("epoch")
        if skip_rest:
            raise StopIteration

        self._hook("on_train_batch_end", output, batch, batch_idx)
        results = trainer._results
        # Something was logged with self.log in training (Lightning keeps the keys for the rest of the
        # fit): Lightning's bookkeeping.
        if results is None or results:
            trainer._logger_connector.on_batch_end()
            progress.increment_completed()
            trainer._logger_connector.update_train_step_metrics()
        else:  # nothing to collect or log (both calls would find empty dicts): drop the batch reference
            results.batch = None
            results.batch_size = None
            progress.increment_completed()

    def _next_batch(self, data_fetcher: Any) -> Any:
        """The next training batch: ``next(data_fetcher)``, or, for one loader without prefetching (the
        usual fit), its iterator's next batch with the fetcher's and the combined loader's counters kept as
        they would (Lightning's fetcher, combined loader and pytree pass: about 40 us a step of a 2-core CPU's
        200 for the batch, measured in a fit alternating the two by epoch)."""
        if not self._direct_fetch:
            return next(data_fetcher)[0]
        if data_fetcher.done:  # as the fetcher: nothing more is drawn from the loader
            raise StopIteration
        cycle = data_fetcher.iterator._iterator  # CombinedLoader -> _MaxSizeCycle over the one loader
        try:
            batch = next(cycle.iterators[0])
        except StopIteration:  # the loader ran out early: what _MaxSizeCycle and the fetcher do
            cycle._consumed[0] = True
            data_fetcher.done = True
            raise
        cycle._idx += 1
        data_fetcher.fetched += 1
        data_fetcher.done = data_fetcher.fetched >= data_fetcher.length
        return batch

    def _step_schedulers(self, interval: str) -> None:
        """``update_lr_schedulers(interval, update_plateau_schedulers=False)`` made direct: the schedulers
        of ``interval`` (not ReduceLROnPlateau, which steps after validation) whose frequency is due."""
        trainer = self.trainer
        configs = trainer.lr_scheduler_configs
        if not configs:
            return
        index = (self.batch_idx if interval == "step" else trainer.current_epoch) + 1
        module = trainer.lightning_module
        for config in configs:
            if config.reduce_on_plateau or config.interval != interval or index % config.frequency:
                continue
            self.scheduler_progress.increment_ready()
            self._module_call("lr_scheduler_step", module.lr_scheduler_step, config.scheduler, None)
            self.scheduler_progress.increment_completed()

    def _optimize(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        """training_step, zero_grad, backward, optimizer step: ``_AutomaticOptimization.run`` made direct."""
        trainer = self.trainer
        module = trainer.lightning_module
        optimizer = trainer.optimizers[0]
        optim_progress = self.automatic_optimization.optim_progress.optimizer
        optim_progress.step.increment_ready()
        with torch.enable_grad():
            args = (batch, batch_idx) if self._step_takes_index else (batch,)
            with trainer.precision_plugin.train_step_context():
                step_output = self._module_call("training_step", module.training_step, *args)
            loss, extra = _loss_and_extra(step_output)
            if loss is None:
                _warn_none()
            optim_progress.zero_grad.increment_ready()
            self._hook("on_before_zero_grad", optimizer)
            optim_progress.zero_grad.increment_started()
            self._module_call("optimizer_zero_grad", optimizer.zero_grad)
            optim_progress.zero_grad.increment_completed()
            if loss is not None:
                self._hook("on_before_backward", loss)
                loss.backward()
                self._hook("on_after_backward")
            self._hook("on_before_optimizer_step", optimizer)
        optimizer.step()
        optim_progress.step.increment_completed()
        return {"loss": loss.detach(), **extra} if loss is not None else {}


def _one_plain_loader(data_fetcher: Any) -> bool:
    """Whether the epoch's batches are one loader's own, which :meth:`LeanEpochLoop._next_batch` may take
    directly: Lightning's fetcher without prefetched batches (a loader with a length), over a combined
    loader of a single loader (not a collection of loaders) in ``max_size_cycle`` mode."""
    if type(data_fetcher) is not _PrefetchDataFetcher or data_fetcher.batches or data_fetcher.length is None:
        return False
    combined = data_fetcher.iterator
    cycle = getattr(combined, "_iterator", None)
    spec = getattr(combined, "_spec", None)
    return (
        type(cycle) is _MaxSizeCycle
        and len(cycle.iterators) == 1
        and spec is not None
        and spec.is_leaf()  # tree_unflatten of the one batch is the batch itself
    )


def _to_device(batch: Any, device: torch.device) -> Any:
    """``move_data_to_device``, without its walk over the collection (about 40 us a step on a 2-core CPU)
    for the usual batch: a tuple or list of tensors already on ``device`` (``Tensor.to`` would return
    each one itself)."""
    if type(batch) in (tuple, list) and all(type(t) is torch.Tensor and t.device == device for t in batch):
        return batch
    return move_data_to_device(batch, device)


def _loss_and_extra(output: Any) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """The loss and other outputs of ``training_step``, as Lightning's ``ClosureResult`` reads them."""
    if isinstance(output, torch.Tensor):
        return output, {}
    result = ClosureResult.from_training_step_output(output)  # dicts and None; its errors for the rest
    return result.closure_loss, result.extra


def _warn_none() -> None:
    Closure.warning_cache.warn(
        "`training_step` returned `None`. If this was on purpose, ignore this warning..."
    )


def install_lean_loop(trainer: L.Trainer, enabled: bool = True) -> LeanEpochLoop:
    """Give ``trainer`` (before ``fit``) a :class:`LeanEpochLoop`; ``enabled=False``: Lightning's step."""
    old = trainer.fit_loop.epoch_loop
    loop = LeanEpochLoop(trainer, min_steps=old.min_steps, max_steps=old.max_steps)
    loop.enabled = enabled
    trainer.fit_loop.epoch_loop = loop
    return loop
