"""IPSLoss and the small distillation helpers that other methods share.

Everything is computed in float32, even under autocast: softmax with a temperature over many
classes loses too much in half precision, and the KL term is a small difference of large logs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchswap.ops import apply_cell_mask, patch_swap_targets

__all__ = [
    "DIRECTIONS",
    "DenseIPSLoss",
    "DenseIPSLossOutput",
    "IPSLoss",
    "IPSLossOutput",
    "VALUE_CHECK_DEVICES",
    "distillation_kl",
    "kl_with_temperature",
    "reads_values_on",
    "soft_cross_entropy",
    "true_class_prob",
]

DIRECTIONS = ("symmetric", "confident", "mixed")


# Device types on which checks read tensor values back every step: free on the CPU, a host-device
# sync per step anywhere else. IPSLoss's value checks and the engine's non-finite guard follow it.
VALUE_CHECK_DEVICES: tuple[str, ...] = ("cpu",)


def reads_values_on(*tensors: Tensor) -> bool:
    """Whether per-step checks may read these tensors' values (see :data:`VALUE_CHECK_DEVICES`)."""
    return all(t.device.type in VALUE_CHECK_DEVICES for t in tensors)


class IPSLossOutput(NamedTuple):
    """The total loss and its parts, for logging (the parts are detached)."""

    loss: Tensor
    ce: Tensor
    kd: Tensor
    teacher_a_fraction: Tensor


def _check_target(logits: Tensor, target: Tensor) -> None:
    n, c = logits.shape
    if target.dim() == 1:
        if target.shape[0] != n:
            raise ValueError(f"target has {target.shape[0]} labels for {n} logits rows")
        if target.is_floating_point():
            raise ValueError("class-index targets must be integers; pass probabilities as [N, num_classes]")
    elif target.dim() == 2:
        if tuple(target.shape) != (n, c):
            raise ValueError(
                f"probability targets must be [N, num_classes] = {(n, c)}, got {tuple(target.shape)}"
            )
    else:
        raise ValueError(
            f"target must be class indices [N] or probabilities [N, C], got {tuple(target.shape)}"
        )


def soft_cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy in float32 for class indices ``[N]`` or probability targets ``[N, C]``."""
    _check_target(logits, target)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        t = target if target.dim() == 1 else target.float()
        return F.cross_entropy(logits.float(), t, label_smoothing=label_smoothing)


def kl_with_temperature(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    *,
    t2_scaling: bool = True,
    reduction: str = "none",
) -> Tensor:
    """``KL(softmax(z_t / T) || softmax(z_s / T))`` over dim 1 (the classes), in float32; times
    ``T^2`` when ``t2_scaling`` (Hinton's scaling keeps the gradient's size independent of T).

    The one KL of the package: :func:`distillation_kl` (the KD methods), :class:`IPSLoss` and
    :class:`DenseIPSLoss` all call it. Any layout with classes on dim 1: ``[N, C]`` or logit maps
    ``[N, C, H, W]``. ``reduction="none"`` keeps one value per row (or pixel), ``"batchmean"``
    averages them, ``"sum"`` adds them. Gradients reach both sides: detach a teacher that must not learn.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() < 2:
        raise ValueError(
            "student and teacher logits must have the same shape with classes on dim 1 ([N, C] or "
            f"[N, C, H, W]), got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    if reduction not in ("none", "batchmean", "sum"):
        raise ValueError(f"reduction must be 'none', 'batchmean' or 'sum', got {reduction!r}")
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
        log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
        if t2_scaling:
            kl = kl * (temperature**2)
        if reduction == "none":
            return kl
        return kl.sum() if reduction == "sum" else kl.mean()


def distillation_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    *,
    t2_scaling: bool = True,
    detach_teacher: bool = True,
    reduction: str = "batchmean",
) -> Tensor:
    """Hinton's KD term ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` between ``[N, C]`` logits.

    :func:`kl_with_temperature` for classification: ``reduction="none"`` gives one value per row,
    ``"batchmean"`` their mean. The teacher's logits are detached unless ``detach_teacher=False``
    (the seed's sketch never detaches).
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            "student and teacher logits must both be [N, num_classes], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if reduction not in ("none", "batchmean"):
        raise ValueError(f"reduction must be 'none' or 'batchmean', got {reduction!r}")
    if detach_teacher:
        teacher_logits = teacher_logits.detach()
    return kl_with_temperature(
        student_logits, teacher_logits, temperature, t2_scaling=t2_scaling, reduction=reduction
    )


def true_class_prob(logits: Tensor, target: Tensor) -> Tensor:
    """Probability each row puts on its true class (expected under probability targets)."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        p = F.softmax(logits.detach().float(), dim=1)
        if target.dim() == 1:
            return p.gather(1, target[:, None].long())[:, 0]
        return (p * target.float()).sum(dim=1)


def _check_hyper(temperature: float, alpha: float, gamma: float) -> None:
    """The loss weights and temperature: finite numbers in range (NaN fails every comparison)."""
    for name, value in (("temperature", temperature), ("alpha", alpha), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    if alpha < 0 or gamma < 0:
        raise ValueError(f"alpha and gamma must be non-negative, got alpha={alpha!r}, gamma={gamma!r}")


def _check_logit_dtype(*logits: Tensor) -> None:
    for z in logits:
        if not z.is_floating_point():
            raise ValueError(
                f"logits must be floating point (a network's raw outputs), got {z.dtype}; "
                "class indices go in target"
            )


def _check_values(logits_a: Tensor, logits_b: Tensor, target: Tensor) -> None:
    """The checks that read values: CPU tensors only (on a GPU each would sync the host)."""
    for name, z in (("logits_a", logits_a), ("logits_b", logits_b)):
        if not bool(torch.isfinite(z).all()):
            raise ValueError(f"{name} holds NaN or inf values: the network diverged or its input is broken")
    c = logits_a.shape[1]
    if target.dim() == 1:
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= c):
            raise ValueError(
                f"labels must be in [0, {c}) for {c} classes, got values from {int(target.min())} "
                f"to {int(target.max())}"
            )
        return
    t = target.float()
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError("probability targets must be finite and non-negative")
    worst = float((t.sum(dim=1) - 1).abs().max()) if t.numel() else 0.0
    if worst > (1e-2 if target.dtype in (torch.float16, torch.bfloat16) else 1e-4):
        raise ValueError(
            f"probability targets must sum to 1 over the classes (a row is off by {worst:.3g}); "
            "pass class indices [N] or normalised probabilities [N, num_classes]"
        )


class IPSLoss(nn.Module):
    """Cross-entropy on both swapped views plus instance-to-instance distillation between them.

    ``L = gamma * (CE(z_a, y) + CE(z_b, y)) / 2 + alpha * KD`` where KD averages, over the
    teaching directions, ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``.
    ``direction="symmetric"``: each view teaches the other (the paper's two KD terms).
    ``direction="confident"``: per pair, the view with the higher true-class probability
    teaches the other only. ``direction="mixed"``: ``confident_share`` of the confident term plus
    the rest of the symmetric one. ``detach_teacher`` stops the gradient through the teacher's side.

    Checks, each with a message that says what is wrong: at construction, the hyper-parameters
    (``temperature`` finite and positive, ``alpha`` / ``gamma`` finite and non-negative,
    ``label_smoothing`` in [0, 1)); at every call, the shapes and dtypes (floating-point logits,
    integer labels), which cost nothing. The checks that read the values (logits finite, labels in
    ``[0, num_classes)``, probability targets non-negative and summing to 1) run only on CPU tensors
    (:data:`VALUE_CHECK_DEVICES`): on an accelerator they would wait for the device at every step, so
    there they are skipped. ``check_values=False`` turns them off: the training engine does, because
    its guard stops (or skips) a non-finite step with the step's number (``trainer.on_nonfinite``) and
    its data carries valid labels by construction.
    """

    def __init__(
        self,
        temperature: float = 4.0,
        alpha: float = 1.0,
        gamma: float = 1.0,
        direction: str = "symmetric",
        detach_teacher: bool = True,
        t2_scaling: bool = True,
        label_smoothing: float = 0.0,
        check_values: bool = True,
        confident_share: float = 0.5,
    ) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if not 0.0 <= confident_share <= 1.0:  # False for NaN too
            raise ValueError(f"confident_share must be in [0, 1], got {confident_share!r}")
        _check_hyper(temperature, alpha, gamma)
        if not 0.0 <= label_smoothing < 1.0:  # False for NaN too
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.direction = direction
        self.detach_teacher = bool(detach_teacher)
        self.t2_scaling = bool(t2_scaling)
        self.label_smoothing = float(label_smoothing)
        self.check_values = bool(check_values)
        self.confident_share = float(confident_share)

    def forward(self, logits_a: Tensor, logits_b: Tensor, target: Tensor) -> IPSLossOutput:
        if logits_a.shape != logits_b.shape or logits_a.dim() != 2:
            raise ValueError(
                "logits_a and logits_b must both be [N, num_classes], got "
                f"{tuple(logits_a.shape)} and {tuple(logits_b.shape)}"
            )
        _check_target(logits_a, target)
        _check_logit_dtype(logits_a, logits_b)
        if self.check_values and reads_values_on(logits_a, target):  # no device sync elsewhere
            _check_values(logits_a, logits_b, target)
        ce = (
            soft_cross_entropy(logits_a, target, self.label_smoothing)
            + soft_cross_entropy(logits_b, target, self.label_smoothing)
        ) / 2
        kd_opts = dict(
            temperature=self.temperature, t2_scaling=self.t2_scaling, detach_teacher=self.detach_teacher
        )
        a_confident = true_class_prob(logits_a, target) >= true_class_prob(logits_b, target)
        if self.direction == "symmetric":
            kd = (
                distillation_kl(logits_b, logits_a, **kd_opts)
                + distillation_kl(logits_a, logits_b, **kd_opts)
            ) / 2
        else:
            a_teaches_b = distillation_kl(logits_b, logits_a, reduction="none", **kd_opts)
            b_teaches_a = distillation_kl(logits_a, logits_b, reduction="none", **kd_opts)
            kd = torch.where(a_confident, a_teaches_b, b_teaches_a).mean()
            if self.direction == "mixed":
                symmetric = (a_teaches_b.mean() + b_teaches_a.mean()) / 2
                kd = self.confident_share * kd + (1.0 - self.confident_share) * symmetric
        loss = self.gamma * ce + self.alpha * kd
        return IPSLossOutput(loss, ce.detach(), kd.detach(), a_confident.float().mean())

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, alpha={self.alpha}, gamma={self.gamma}, "
            f"direction={self.direction!r}, confident_share={self.confident_share}, "
            f"detach_teacher={self.detach_teacher}, "
            f"t2_scaling={self.t2_scaling}"
        )


class DenseIPSLossOutput(NamedTuple):
    """The total dense loss and its parts, for logging (the parts are detached)."""

    loss: Tensor
    ce: Tensor
    kl: Tensor


def _check_dense(name: str, x: Tensor, shape: tuple[int, ...], what: str) -> None:
    if not isinstance(x, Tensor) or tuple(x.shape) != shape:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be {what} = {shape} (the shape of logits_a), got {got}")


class DenseIPSLoss(nn.Module):
    """Pixel-wise IPS for segmentation: CE on originals and swapped views plus per-pixel distillation.

    For a same-class pair, the originals a, b and the swapped views a', b' (from
    :func:`~patchswap.ops.patch_swap` with ``cell_mask``) all go through the network, giving logit
    maps ``z_a, z_b, z_a', z_b'`` ``[N, K, H, W]``. The swapped targets are
    ``y_a', y_b' = patch_swap_targets(y_a, y_b, cell_mask)``.

    ``CE`` is the pixel-wise cross-entropy averaged over all pixels of the four maps whose
    target is not ``ignore_index``.

    Every pixel of a' shows the content of exactly one original at the same position (a outside
    the swapped cells, b inside), so a' is taught by the same swap applied to the originals'
    logit maps: ``teacher_a', teacher_b' = apply_cell_mask(z_a.detach(), z_b.detach(), cell_mask)``.
    ``KL`` is ``KL(softmax(teacher / T) || softmax(z_s / T))`` per pixel for each swapped view
    ``s``, times ``T^2`` if ``t2_scaling``, averaged over the pixels of a' and b' whose swapped
    target is not ``ignore_index``. Pairs that did not swap contribute exactly zero KL there (their
    teacher is the student's own content), which holds even with dropout or other noise.

    ``loss = gamma * CE + alpha * KL``, computed in float32 even under autocast. The teacher is
    always detached: it is the same network on the unswapped content, as in IPS's self-distillation.
    """

    def __init__(
        self,
        temperature: float = 4.0,
        alpha: float = 1.0,
        gamma: float = 1.0,
        t2_scaling: bool = True,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if alpha < 0 or gamma < 0:
            raise ValueError(f"alpha and gamma must be non-negative, got alpha={alpha!r}, gamma={gamma!r}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.t2_scaling = bool(t2_scaling)
        self.ignore_index = int(ignore_index)

    def forward(
        self,
        logits_a: Tensor,
        logits_b: Tensor,
        logits_swap_a: Tensor,
        logits_swap_b: Tensor,
        target_a: Tensor,
        target_b: Tensor,
        cell_mask: Tensor,
        *,
        patch_size: int | tuple[int, int] | None = None,
    ) -> DenseIPSLossOutput:
        if not isinstance(logits_a, Tensor) or logits_a.dim() != 4:
            got = tuple(logits_a.shape) if isinstance(logits_a, Tensor) else type(logits_a).__name__
            raise ValueError(f"logits_a must be [N, K, H, W] (upsample logits to the target size), got {got}")
        n, _, h, w = logits_a.shape
        for name, x in (
            ("logits_b", logits_b),
            ("logits_swap_a", logits_swap_a),
            ("logits_swap_b", logits_swap_b),
        ):
            _check_dense(name, x, tuple(logits_a.shape), "[N, K, H, W]")
        for name, t in (("target_a", target_a), ("target_b", target_b)):
            _check_dense(name, t, (n, h, w), "[N, H, W]")
            if t.is_floating_point() or t.dtype == torch.bool:
                raise ValueError(f"{name} must hold integer class indices (int64), got {t.dtype}")
        if not isinstance(cell_mask, Tensor) or cell_mask.dim() != 3 or cell_mask.shape[0] != n:
            got = tuple(cell_mask.shape) if isinstance(cell_mask, Tensor) else type(cell_mask).__name__
            raise ValueError(f"cell_mask must be [N, rows, cols] with N = {n}, got {got}")

        ignore, t = self.ignore_index, self.temperature
        ts_a, ts_b = patch_swap_targets(target_a, target_b, cell_mask, patch_size=patch_size)
        with torch.autocast(device_type=logits_a.device.type, enabled=False):
            # Teachers: the originals' logit maps under the same swap (float32 first: exact either way).
            teach_a, teach_b = apply_cell_mask(
                logits_a.detach().float(), logits_b.detach().float(), cell_mask, patch_size=patch_size
            )
            ce_sum = logits_a.new_zeros((), dtype=torch.float32)
            valid = 0
            for z, y in (
                (logits_a, target_a),
                (logits_b, target_b),
                (logits_swap_a, ts_a),
                (logits_swap_b, ts_b),
            ):
                ce_sum = ce_sum + F.cross_entropy(z.float(), y.long(), ignore_index=ignore, reduction="sum")
                valid = valid + (y != ignore).sum()
            ce = ce_sum / torch.clamp(valid, min=1)

            swapped_pair = cell_mask.flatten(1).any(dim=1).to(logits_a.device)[:, None, None]
            kl_sum = logits_a.new_zeros((), dtype=torch.float32)
            kl_valid = 0
            for z, teacher, y in ((logits_swap_a, teach_a, ts_a), (logits_swap_b, teach_b, ts_b)):
                kl = kl_with_temperature(z, teacher, t, t2_scaling=self.t2_scaling)  # [N, H, W]
                keep = (y != ignore) & swapped_pair
                kl_sum = kl_sum + torch.where(keep, kl, torch.zeros_like(kl)).sum()
                kl_valid = kl_valid + (y != ignore).sum()
            kl = kl_sum / torch.clamp(kl_valid, min=1)
            loss = self.gamma * ce + self.alpha * kl
        return DenseIPSLossOutput(loss, ce.detach(), kl.detach())

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, alpha={self.alpha}, gamma={self.gamma}, "
            f"t2_scaling={self.t2_scaling}, ignore_index={self.ignore_index}"
        )
