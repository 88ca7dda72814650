"""Intra-class Patch Swap: swap cells between same-class pairs, then distil between the two views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from patchswap.config_base import opt
from patchswap.ips_options import DistillOptions, SwapOptions
from patchswap.losses import IPSLoss
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method
from patchswap.methods.mixing import MIX_MODES, cutmix, cutout, mix_targets, mixup


@register_method
class IntraClassPatchSwap(Method):
    name = "ips"
    needs_pairs = True

    @dataclass
    class Options(DistillOptions, SwapOptions):
        """The swap and loss options (shared with dense IPS), then the classification-only ones."""

        prob_warmup_epochs: int = opt(0, "prob rises linearly from 0 over these epochs")
        direction: str = opt("symmetric", "symmetric or confident (the more confident view teaches)")
        detach_teacher: bool = opt(True, "stop the gradient through the teaching view")
        label_smoothing: float = opt(0.0, "cross-entropy target mass spread uniformly over all classes")
        partner: str = opt("same_class", "same_class, or any_class (ablation)")
        mix: str = opt("none", "after the swap: none, cutout, mixup or cutmix (same draw for both views)")
        mix_alpha: float = opt(1.0, "Beta(mix_alpha, mix_alpha) of mixup / cutmix")
        cutout_size: int = opt(8, "hole side in pixels for mix=cutout")
        separate_views: bool = opt(False, "one forward per view: BatchNorm sees each view's statistics alone")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        o.check_swap(prefix="ips ")
        # check_values off: under the engine a non-finite loss is the guard's to stop or skip
        # (trainer.on_nonfinite), with its step number, and labels come valid from the data.
        self.loss_fn = IPSLoss(
            check_values=False,
            **o.loss_kwargs(),
            direction=o.direction,
            detach_teacher=o.detach_teacher,
            label_smoothing=o.label_smoothing,
        )
        if o.partner not in ("same_class", "any_class"):
            raise ValueError(f"ips partner must be 'same_class' or 'any_class', got {o.partner!r}")
        if o.mix not in MIX_MODES:
            raise ValueError(f"ips mix must be one of {MIX_MODES}, got {o.mix!r}")
        if not o.mix_alpha > 0:
            raise ValueError(f"ips mix_alpha must be positive, got {o.mix_alpha!r}")
        if o.cutout_size < 1:
            raise ValueError(f"ips cutout_size must be at least 1 pixel, got {o.cutout_size!r}")
        self.swap = o.patch_swap()

    def sampler_options(self) -> dict[str, Any]:
        return {"partner": self.options.partner}

    def current_prob(self, epoch: int) -> float:
        warm = self.options.prob_warmup_epochs
        return self.options.prob if warm <= 0 else self.options.prob * min(1.0, epoch / warm)

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        x, y = batch.x, batch.y
        if x.shape[0] % 2:
            raise ValueError("ips needs batches laid out [anchors..., partners...] (an even batch)")
        n = x.shape[0] // 2
        self.swap.prob = self.current_prob(batch.epoch)
        # In place on the freshly augmented batch: no copy, and both views go through one forward.
        x, swapped = self.swap.swap_batch(x, batch.generator, inplace=True)
        mixed = None
        if self.options.mix == "cutout":
            x = cutout(x, self.options.cutout_size, generator=batch.generator, views=2)
        elif self.options.mix in ("mixup", "cutmix"):
            mix_fn = mixup if self.options.mix == "mixup" else cutmix
            mixed = mix_fn(x, self.options.mix_alpha, generator=batch.generator, views=2)
            x = mixed.x
        # One forward for both views (BatchNorm statistics over both), or one per view (ablation).
        logits = torch.cat([model(x[:n]), model(x[n:])]) if self.options.separate_views else model(x)
        # One target per pair: the mixing draw is shared by both views, so they keep the same target.
        targets = y[:n] if mixed is None else mix_targets(y[:n], mixed.perm, mixed.lam, logits.shape[1])
        out = self.loss_fn(logits[:n], logits[n:], targets)
        parts = {
            "ce": out.ce,
            "kd": out.kd,
            "teacher_a_fraction": out.teacher_a_fraction,
            "swap_fraction": swapped.fraction.mean(),
        }
        if mixed is not None:
            parts["mix_lam"] = mixed.lam.detach()
        labels = targets if targets.dim() == 1 else targets.argmax(dim=1)
        return StepOutput(out.loss, logits, torch.cat([labels, labels]), parts)
