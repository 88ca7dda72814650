"""KD (Hinton et al. 2015): distil a frozen teacher network from a finished patchswap run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from patchswap.config_base import opt
from patchswap.losses import distillation_kl, soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method
from patchswap.methods.checks import check_distillation
from patchswap.runs import (
    CONFIG_KEY,
    MODEL_PREFIX,
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    locate_checkpoint,
    network_state,
)


def locate_teacher(path: str | Path) -> Path:
    """The checkpoint of a run directory (``checkpoints/best.ckpt``, else ``last.ckpt``) or a file."""
    try:
        return locate_checkpoint(path)
    except CheckpointNotFoundError as e:
        raise CheckpointNotFoundError(
            f"kd teacher: {e}; pass a patchswap run directory or its .ckpt file"
        ) from None


def _in_chans(state: dict[str, Tensor]) -> int:
    """Input channels: those of the first convolution kernel (the stem), 3 if there is none."""
    for value in state.values():
        if value.dim() == 4 and value.is_floating_point():
            return int(value.shape[1])
    return 3


def _class_count_hint(mismatched: list[tuple[str, tuple, tuple]], num_classes: int) -> int | None:
    """The teacher's class count when every mismatch is a head tensor sized by the classes."""
    counts = {ck[0] for _, ck, own in mismatched if own and own[0] == num_classes and ck[1:] == own[1:]}
    return counts.pop() if len(counts) == 1 else None


def load_teacher(path: str | Path, num_classes: int) -> nn.Module:
    """Build the teacher of a patchswap run from its checkpoint: its own architecture, frozen, eval mode."""
    from patchswap.models import create_model

    file = locate_teacher(path)
    try:  # weights_only: a teacher path may come from anywhere, so refuse pickled code
        ckpt = load_checkpoint(file, weights_only=True)
    except CheckpointError as e:
        raise ValueError(f"kd teacher could not be read: {e}") from e
    if not isinstance(ckpt.get(CONFIG_KEY), dict):
        raise ValueError(
            f"kd teacher {file} carries no patchswap config ('{CONFIG_KEY}'): pass a run directory or a "
            ".ckpt written by patchswap train"
        )
    model_cfg = ckpt[CONFIG_KEY].get("model") or {}
    arch = model_cfg.get("name")
    if not isinstance(arch, str):
        raise ValueError(f"kd teacher {file}: its config names no model (model.name)")
    state = network_state(ckpt["state_dict"])
    if not state:
        raise ValueError(f"kd teacher {file} has no '{MODEL_PREFIX}*' weights in its state_dict")
    in_chans = _in_chans(state)
    teacher = create_model(arch, num_classes, in_chans=in_chans)
    own = teacher.state_dict()
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        classes = _class_count_hint(mismatched, num_classes)
        what = (
            f"the teacher predicts {classes} classes but the student {num_classes}"
            if classes is not None
            else f"its tensors do not fit a {arch} with {num_classes} classes and {in_chans} input channels"
        )
        shapes = ", ".join(f"{k} {ck} vs {ok}" for k, ck, ok in mismatched[:4])
        raise ValueError(f"kd teacher {file} ({arch}): {what} ({shapes}); train the teacher on the same data")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"kd teacher {file}: its weights do not match a freshly built {arch} "
            f"(missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    teacher.load_state_dict(state, strict=False)
    teacher.eval().requires_grad_(False)
    return teacher


@register_method
class KnowledgeDistillation(Method):
    """``(1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``.

    The teacher is any patchswap run (``teacher``: its run directory or a ``.ckpt``), rebuilt with
    the architecture named in its saved config. It is loaded before training (``prepare_training``;
    evaluating a student never needs it), kept frozen in eval mode, moved to the batch's device, and is not a
    submodule: it is neither trained nor saved in the student's checkpoint.
    """

    name = "kd"

    @dataclass
    class Options:
        teacher: str | None = opt(None, "teacher run directory or .ckpt (required)")
        temperature: float = opt(4.0, "softens teacher and student predictions in the KL term")
        alpha: float = opt(0.9, "weight of the KL term; 1 - alpha weighs CE")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        if not o.teacher:
            raise ValueError("kd needs a teacher: pass --kd.teacher RUN_DIR (or a .ckpt of a patchswap run)")
        check_distillation(self.name, o.temperature)
        if not 0.0 <= o.alpha <= 1.0:
            raise ValueError(f"kd alpha must be in [0, 1], got {o.alpha!r}")
        self.__dict__["_teacher"] = None  # bypasses nn.Module registration: not a submodule

    def prepare_training(self) -> None:
        self.teacher_model()  # a missing or mismatched teacher fails here, before the first epoch

    def teacher_model(self, device: torch.device | str | None = None) -> nn.Module:
        """The frozen teacher (loaded on first use), on ``device`` when given."""
        teacher: nn.Module | None = self.__dict__["_teacher"]
        if teacher is None:
            if self.num_classes < 1:
                raise ValueError("kd needs the student's class count: build it with num_classes=...")
            teacher = load_teacher(self.options.teacher, self.num_classes)  # type: ignore[arg-type]
            self.__dict__["_teacher"] = teacher
        if device is not None:
            param = next(teacher.parameters(), None)
            if param is not None and param.device != torch.device(device):
                teacher.to(device)
        return teacher

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        o = self.options
        teacher = self.teacher_model(batch.x.device)
        with torch.no_grad():
            teacher_logits = teacher(batch.x)
        logits = model(batch.x)
        ce = soft_cross_entropy(logits, batch.y)
        kd = distillation_kl(logits, teacher_logits, o.temperature)
        loss = (1.0 - o.alpha) * ce + o.alpha * kd
        teacher_acc = (teacher_logits.argmax(dim=1) == batch.y).float().mean()
        parts = {"ce": ce.detach(), "kd": kd.detach(), "teacher_acc": teacher_acc}
        return StepOutput(loss, logits, batch.y, parts)
