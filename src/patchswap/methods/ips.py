"""Intra-class Patch Swap: swap cells between same-class pairs, then distil between the two views.

``pairing`` decides what a step costs. ``partner`` (the paper's): every training image is an anchor once
per epoch with a random same-class partner, so a step forwards ``2 x data.batch_size`` images and an
epoch twice a plain epoch's. ``half`` and ``in_batch`` run at a plain epoch's cost (``data.batch_size``
images per step, as many steps): ``half`` keeps a fresh random half of the anchors each epoch;
``in_batch`` builds each batch from P classes x K images paired inside it, so each image is used once.
``in_batch`` is the default: at half the paper's cost it beat the paper's form on validation in issue 17's
converged CPU study (+1.00 points, 95% interval above 0; docs/methods.md).
"""

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

PAIRINGS = ("partner", "half", "in_batch")
ALPHA_SCHEDULES = ("constant", "ramp", "decay")


@register_method
class IntraClassPatchSwap(Method):
    name = "ips"
    needs_pairs = True

    @dataclass
    class Options(DistillOptions, SwapOptions):
        """The swap and loss options (shared with dense IPS), then the classification-only ones."""

        prob_warmup_epochs: int = opt(0, "prob rises linearly from 0 over these epochs")
        direction: str = opt(
            "symmetric", "symmetric, confident (the more confident view teaches), or mixed (confident_share)"
        )
        confident_share: float = opt(0.5, "direction=mixed: share of the confident KL, the rest symmetric")
        alpha_schedule: str = opt(
            "constant", "KL weight over the run, per epoch: constant, ramp (0 -> alpha) or decay (alpha -> 0)"
        )
        detach_teacher: bool = opt(True, "stop the gradient through the teaching view")
        label_smoothing: float = opt(0.0, "cross-entropy target mass spread uniformly over all classes")
        partner: str = opt("same_class", "same_class, or any_class (ablation)")
        mix: str = opt("none", "after the swap: none, cutout, mixup or cutmix (same draw for both views)")
        mix_alpha: float = opt(1.0, "Beta(mix_alpha, mix_alpha) of mixup / cutmix")
        cutout_size: int = opt(8, "hole side in pixels for mix=cutout")
        separate_views: bool = opt(False, "one forward per view: BatchNorm sees each view's statistics alone")
        pairing: str = opt(
            "in_batch",
            "in_batch or half (batch_size images per step: ce's cost), or partner (the paper's: 2x)",
        )
        samples_per_class: int = opt(
            0, "pairing=in_batch: images of a class per batch (even; 0: the smallest that fits)"
        )

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
            confident_share=o.confident_share,
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
        if o.alpha_schedule not in ALPHA_SCHEDULES:
            raise ValueError(f"ips alpha_schedule must be one of {ALPHA_SCHEDULES}, got {o.alpha_schedule!r}")
        if o.pairing not in PAIRINGS:
            raise ValueError(f"ips pairing must be one of {PAIRINGS}, got {o.pairing!r}")
        if o.pairing == "in_batch" and o.partner != "same_class":
            raise ValueError("ips pairing=in_batch pairs images of one class: it needs partner=same_class")
        if o.samples_per_class < 0 or o.samples_per_class % 2:
            raise ValueError(
                f"ips samples_per_class must be even (0: the smallest that fits), got {o.samples_per_class!r}"
            )
        self.swap = o.patch_swap()

    def sampler_options(self, batch_size: int) -> dict[str, Any]:
        o = self.options
        if o.pairing == "partner":
            return {"partner": o.partner}
        if batch_size % 2:
            raise ValueError(
                f"ips pairing={o.pairing} makes data.batch_size / 2 pairs per step: set data.batch_size "
                f"to an even number (got {batch_size})"
            )
        if o.pairing == "half":
            return {"partner": o.partner, "pairs_per_batch": batch_size // 2, "anchor_fraction": 0.5}
        return {
            "pairs_per_batch": batch_size // 2,
            "mode": "in_batch",
            "samples_per_class": o.samples_per_class,
        }

    def current_alpha(self, epoch: int, max_epochs: int) -> float:
        """The KL weight of an epoch under ``alpha_schedule`` (linear in ``epoch / max_epochs``)."""
        progress = min(1.0, epoch / max(1, max_epochs))
        scale = {"constant": 1.0, "ramp": progress, "decay": 1.0 - progress}[self.options.alpha_schedule]
        return self.options.alpha * scale

    def current_prob(self, epoch: int) -> float:
        warm = self.options.prob_warmup_epochs
        return self.options.prob if warm <= 0 else self.options.prob * min(1.0, epoch / warm)

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        x, y = batch.x, batch.y
        if x.shape[0] % 2:
            raise ValueError("ips needs batches laid out [anchors..., partners...] (an even batch)")
        n = x.shape[0] // 2
        self.swap.prob = self.current_prob(batch.epoch)
        self.loss_fn.alpha = self.current_alpha(batch.epoch, batch.max_epochs)
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
