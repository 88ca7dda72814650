"""Fine-tuning glue: a frozen backbone for the first epochs, and an EMA of the weights that is evaluated.

:func:`finetune_callbacks` turns the ``optim`` section into the callbacks a run needs (none by default):

* :class:`FreezeBackbone` (``optim.freeze_backbone_epochs = N``): for epochs ``0..N-1`` every backbone
  parameter (all but the classifier head, :func:`patchswap.models.split_head`) has
  ``requires_grad=False`` -- it gets no gradient, so neither SGD (momentum, weight decay) nor AdamW
  moves it -- and every BatchNorm layer of the backbone is kept in eval mode, so its running mean and
  variance do not move either (a head trained on features whose normalisation drifts under it would
  be trained on something else). From epoch ``N`` on, everything trains. Parameters that were frozen
  before training stay frozen.
* :class:`WeightEMA` (``optim.ema_decay > 0``): timm's ``ModelEmaV3`` of the network (parameters and
  buffers), updated after every optimizer step. Validation during training runs on the EMA weights
  (swapped in and out), so ``best.ckpt`` is selected on them; every checkpoint stores the EMA weights
  as the network's weights (``state_dict['model.*']``: what the final val/test, ``eval``,
  ``calibrate``, ``predict``, ``export`` and the ``.safetensors`` files read) and the online (trained)
  weights in the callback's state, so ``--resume`` restores both exactly. At the end of fitting the
  network holds the EMA weights.

Both work with one device or DDP; with DDP a frozen backbone needs
``--trainer.strategy ddp_find_unused_parameters_true``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from patchswap.engine.config import OptimSection
from patchswap.models import classifier_names, split_head
from patchswap.models.heads import unwrap_compiled

__all__ = ["FreezeBackbone", "WeightEMA", "finetune_callbacks"]


def finetune_callbacks(optim: OptimSection) -> list[L.Callback]:
    """The callbacks ``optim`` asks for: freezing (``freeze_backbone_epochs``), EMA (``ema_decay``)."""
    callbacks: list[L.Callback] = []
    if optim.freeze_backbone_epochs > 0:
        callbacks.append(FreezeBackbone(optim.freeze_backbone_epochs))
    if optim.ema_decay > 0:
        callbacks.append(WeightEMA(optim.ema_decay, warmup=optim.ema_warmup))
    return callbacks


class FreezeBackbone(L.Callback):
    """Backbone parameters and BatchNorm statistics frozen for the first ``epochs`` training epochs."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self._params: list[nn.Parameter] = []
        self._norms: list[nn.Module] = []
        self.frozen = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = unwrap_compiled(pl_module.model)
        _, backbone = split_head(model)
        self._params = [p for _, p in backbone if p.requires_grad]  # frozen-for-good ones stay frozen
        heads = tuple(name + "." for name in classifier_names(model))
        self._norms = [
            m
            for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not (name + ".").startswith(heads)
        ]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.frozen = trainer.current_epoch < self.epochs
        for p in self._params:
            p.requires_grad_(not self.frozen)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Every batch: Lightning restores each submodule's own mode after a validation, so frozen norms
        # would stay in eval mode after unfreezing, and a module-wide train() would unfreeze them.
        for m in self._norms:
            m.train(not self.frozen)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for p in self._params:
            p.requires_grad_(True)


class WeightEMA(L.Callback):
    """An EMA of the weights (timm ``ModelEmaV3``) that validation, checkpoints and the end of fit use."""

    def __init__(self, decay: float, *, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.ema: Any = None
        self._module: L.LightningModule | None = None
        self._pending_online: dict[str, torch.Tensor] | None = None
        self._stash: dict[str, torch.Tensor] | None = None

    # -- set-up and resume ---------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._module = pl_module

    def _net(self) -> nn.Module:
        assert self._module is not None
        return unwrap_compiled(self._module.model)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from timm.utils import ModelEmaV3

        # After a resume the network holds the checkpoint's EMA weights: the EMA starts as a copy of
        # them, and the online weights come back from this callback's state.
        net = self._net()
        self.ema = ModelEmaV3(net, decay=self.decay, use_warmup=self.warmup)
        if self._pending_online is not None:
            net.load_state_dict(self._pending_online)
            self._pending_online = None

    def state_dict(self) -> dict[str, Any]:
        if self.ema is None:
            return {}
        online = self._stash if self._stash is not None else self._net().state_dict()
        return {"online": {k: v.detach().clone() for k, v in online.items()}, "decay": self.decay}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_online = state_dict.get("online")

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.ema is None:
            return
        prefix = "model." + ("_orig_mod." if pl_module.model is not self._net() else "")
        weights = checkpoint["state_dict"]
        for key, value in self.ema.module.state_dict().items():
            weights[prefix + key] = value.detach().clone()

    # -- training and validation ---------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.ema.update(self._net(), step=trainer.global_step)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ema is None:  # only the fitting trainer has this callback; sanity checks come first
            return
        net = self._net()
        self._stash = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.ema.module.state_dict())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stash is not None:
            self._net().load_state_dict(self._stash)
            self._stash = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ema is not None:
            self._net().load_state_dict(self.ema.module.state_dict())
