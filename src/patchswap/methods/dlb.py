"""DLB (Shen et al. 2022): self-distillation from the last mini-batch, without a special sampler.

Two forms: ``paper`` (the default: half of the last batch is kept, as the paper's sampler overlaps
half-batches) and ``official`` (the authors' code: the whole last batch is kept and forwarded again
under a second augmented view, with cross-entropy on both batches and the memory carried across
epochs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from patchswap.config_base import opt
from patchswap.losses import distillation_kl, soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method
from patchswap.methods.checks import check_distillation

FORMS = ("paper", "official")
_MEMORY_KEYS = ("kept_images", "kept_labels", "kept_logits")  # the official form's checkpointed memory
_KEPT_KEYS = ("kept_half_images", "kept_half_logits", "kept_half_epoch")  # the paper form's, mid-epoch


@register_method
class LastMiniBatchKD(Method):
    """``CE(z_t, y_t) + alpha * T^2 * KL(softmax(z_{t-1}(k) / T) || softmax(z_t(k) / T))``.

    ``k`` is the second half of the previous step's (augmented) images, kept in the method with
    their detached logits ``z_{t-1}(k)`` and forwarded again with the current batch, so a step sees
    1.5x the images of a plain step. The memory starts empty every epoch; it is saved in the state
    dict (with its epoch), so a run resumed from a checkpoint written inside an epoch continues exactly.

    ``form="official"`` (the authors' ``dlb.py``): ``CE([z_t(B'_{t-1}), z_t(B_t)], [y_{t-1}, y_t]) +
    alpha * T^2 * KL_T(z_{t-1}(B_{t-1}) || z_t(B'_{t-1}))``, where ``B'_{t-1}`` is a second, fresh
    augmentation of the whole previous batch (``MethodBatch.augment`` of its ``raw`` images; without
    them the previous batch is forwarded again as it was) in a forward pass of its own after the
    current batch's, and the CE is the mean over both batches. A step sees 2x the images. The memory
    (raw images, labels, detached logits) is carried across epochs and saved in the state dict, so a
    resumed run continues exactly.
    """

    name = "dlb"

    @dataclass
    class Options:
        temperature: float = opt(3.0, "softens both predictions in the last-mini-batch KL term")
        alpha: float = opt(1.0, "weight of the last-mini-batch KL term")
        form: str = opt("paper", "paper (half batch kept, same view) or official (the authors' code)")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        check_distillation(self.name, o.temperature, alpha=o.alpha)
        if o.form not in FORMS:
            raise ValueError(f"dlb form must be one of {FORMS}, got {o.form!r}")
        self._kept: tuple[Tensor, Tensor] | None = None  # (images, their logits) from the last step
        self._kept_epoch = -1
        self._memory: tuple[Tensor, Tensor, Tensor] | None = None  # official: (raw images, labels, logits)

    def reset(self) -> None:
        """Forget the kept (half-)batch (the paper form does so itself when the epoch changes)."""
        self._kept, self._kept_epoch, self._memory = None, -1, None

    def _usable_kept(self, x: Tensor, epoch: int) -> tuple[Tensor, Tensor] | None:
        if self._kept is None or self._kept_epoch != epoch:
            return None
        images, logits = self._kept
        if images.shape[1:] != x.shape[1:]:
            return None
        if images.device != x.device:  # restored from a checkpoint (loaded on the CPU, the module moved
            # after): plain attributes do not follow nn.Module.to, so the kept batch follows the step here
            self._kept = images, logits = images.to(x.device), logits.to(x.device)
        return images, logits

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        if self.options.form == "official":
            return self._official(model, batch)
        x, y = batch.x, batch.y
        n = x.shape[0]
        kept = self._usable_kept(x, batch.epoch)
        logits_all = model(torch.cat([x, kept[0]]) if kept is not None else x)
        logits = logits_all[:n]
        ce = soft_cross_entropy(logits, y)
        if kept is not None:
            kd = distillation_kl(logits_all[n:], kept[1], self.options.temperature)
        else:
            kd = logits.new_zeros((), dtype=torch.float32)
        loss = ce + self.options.alpha * kd
        half = n // 2
        self._kept = (x[half:].detach().clone(), logits[half:].detach())
        self._kept_epoch = batch.epoch
        parts = {"ce": ce.detach(), "kd": kd.detach()}
        return StepOutput(loss, logits, y, parts, images=logits_all.shape[0])

    # -- the official form -----------------------------------------------------------------------
    def _official(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        o = self.options
        x, y = batch.x, batch.y
        raw = batch.raw if batch.raw is not None else x
        logits = model(x)
        memory = self._memory
        if memory is not None and memory[0].shape[1:] == raw.shape[1:]:
            images, labels, teacher = (t.to(x.device) for t in memory)
            view = batch.augment(images) if batch.augment is not None else images
            logits_prev = model(view)  # a pass of its own: BatchNorm sees the previous batch alone
            ce = soft_cross_entropy(torch.cat([logits_prev, logits]), torch.cat([labels, y]))
            kd = distillation_kl(logits_prev, teacher, o.temperature)
            seen = x.shape[0] + images.shape[0]
        else:
            ce = soft_cross_entropy(logits, y)
            kd = logits.new_zeros((), dtype=torch.float32)
            seen = x.shape[0]
        loss = ce + o.alpha * kd
        self._memory = (raw.detach().clone(), y.detach().clone(), logits.detach().float())
        return StepOutput(loss, logits, y, {"ce": ce.detach(), "kd": kd.detach()}, images=seen)

    def rank_state(self) -> dict[str, Any] | None:
        """Each rank kept its own last batch: the checkpoint carries every rank's."""
        return {"memory": _to_cpu(self._memory), "kept": _to_cpu(self._kept), "kept_epoch": self._kept_epoch}

    def load_rank_states(self, states: list[Any], rank: int, device: torch.device) -> None:
        mine = states[rank]
        if mine is None:
            return
        self._memory = _to_device(mine["memory"], device)
        self._kept, self._kept_epoch = _to_device(mine["kept"], device), int(mine["kept_epoch"])

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._memory is not None:  # only the official form keeps one
            for key, value in zip(_MEMORY_KEYS, self._memory, strict=True):
                destination[prefix + key] = value
        if self._kept is not None:  # only the paper form keeps one
            kept = (*self._kept, torch.tensor(self._kept_epoch))
            for key, value in zip(_KEPT_KEYS, kept, strict=True):
                destination[prefix + key] = value

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        mine = [prefix + key for key in _MEMORY_KEYS]
        kept = [prefix + key for key in _KEPT_KEYS]
        if self.options.form != "official":
            mine = []  # a paper-form method has no memory to load: such keys are unexpected
            if all(k in state_dict for k in kept):
                images, logits, epoch = (state_dict[k] for k in kept)
                self._kept, self._kept_epoch = (images, logits), int(epoch)
            else:
                self._kept, self._kept_epoch = None, -1
        else:
            kept = []
            if all(k in state_dict for k in mine):
                self._memory = tuple(state_dict[k] for k in mine)  # type: ignore[assignment]
        rest = {k: v for k, v in state_dict.items() if k not in mine and k not in kept}
        super()._load_from_state_dict(rest, prefix, *args)


def _to_cpu(tensors: tuple[Tensor, ...] | None) -> tuple[Tensor, ...] | None:
    return None if tensors is None else tuple(t.detach().cpu() for t in tensors)


def _to_device(tensors: tuple[Tensor, ...] | None, device: torch.device) -> Any:
    if tensors is None:
        return None
    return tuple(t.to(device) for t in tensors)
