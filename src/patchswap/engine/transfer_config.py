"""Configuration of ``patchswap transfer``: a classification backbone fine-tuned on a dense task.

Same machinery as the training config (typed sections, YAML files, ``--section.key`` flags, unknown
keys are errors with suggestions); the optimiser and trainer sections are the training ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from patchswap.config_base import ConfigBase, ConfigError, opt
from patchswap.dense.methods import available_dense_methods, dense_method_class
from patchswap.engine.config import OptimSection, TrainerSection, check_trainer

__all__ = ["TASKS", "TransferConfig", "method_options"]

TASKS = ("segment", "detect")
SEGMENT_ARCHS = ("deeplabv3", "fcn")
DETECT_ARCHS = ("fasterrcnn", "retinanet")


@dataclass
class DenseDataSection:
    name: str = opt("scenes", "scenes (MNIST digits on canvases), voc, voc2007 (detection), coco:DIR")
    data_dir: str = opt("../shared/data", "scenes: folder of mnist-*.npz; voc: parent of VOCdevkit")
    download: bool = opt(False, "let torchvision download VOC (needs a network)")
    train_count: int | None = opt(None, "scenes: training canvases (default 4000); others: first N after val")
    val_count: int | None = opt(
        None, "scenes: canvases (default 1000); voc: images carved out of train (500)"
    )
    test_count: int | None = opt(None, "scenes: test canvases (default 1000)")
    canvas: int = opt(64, "scenes: canvas side in pixels")
    scene_seed: int = opt(0, "scenes: seeds the canvases (not the training), so all runs share them")
    crop_size: int = opt(320, "voc/coco segmentation: random crop side for training batches")
    flip: bool = opt(False, "random horizontal flips (off for digits: a mirrored digit is no digit)")
    mean: list[float] | None = opt(
        None, "normalisation mean per channel; default: MNIST for scenes, ImageNet otherwise"
    )
    std: list[float] | None = opt(None, "normalisation std per channel (set with data.mean)")
    batch_size: int = opt(16, "images per step; ips adds one same-class partner per image")
    eval_batch_size: int = opt(32, "images per step when validating and testing")
    num_workers: int = opt(0, "DataLoader workers")


@dataclass
class DenseModelSection:
    arch: str = opt(
        "auto", "segment: deeplabv3 | fcn; detect: fasterrcnn | retinanet; auto: fcn / fasterrcnn"
    )
    backbone: str = opt("resnet8", "a patchswap run dir or checkpoint (trained weights), or a model name")
    fpn_channels: int = opt(64, "detection: feature pyramid width")


# The ``ips`` section is dense IPS's own options: the swap and loss fields shared with classification
# ``ips`` (one definition, patchswap.ips_options) plus ``min_visible`` for detection.
DenseIPSSection = dense_method_class("ips").Options


def _transfer_trainer() -> TrainerSection:
    t = TrainerSection()
    t.epochs = 10
    t.val_every_n_epochs = 1
    return t


def _transfer_optim() -> OptimSection:
    o = OptimSection()
    o.lr = 0.02
    o.weight_decay = 1e-4
    return o


SECTIONS: dict[str, type] = {
    "data": DenseDataSection,
    "model": DenseModelSection,
    "optim": OptimSection,
    "trainer": TrainerSection,
    "ips": DenseIPSSection,
}


AUTO_ARCH = {"segment": "fcn", "detect": "fasterrcnn"}  # the light head of each task: fast on a CPU


@dataclass
class TransferConfig(ConfigBase):
    """A dense fine-tuning run: task, method (ce or ips) and one section per part."""

    task: str = "segment"
    method: str = "ce"
    data: DenseDataSection = field(default_factory=DenseDataSection)
    model: DenseModelSection = field(default_factory=DenseModelSection)
    optim: OptimSection = field(default_factory=_transfer_optim)
    trainer: TrainerSection = field(default_factory=_transfer_trainer)
    ips: DenseIPSSection = field(default_factory=DenseIPSSection)

    TOP_LEVEL = ("task", "method")
    SECTIONS = SECTIONS
    CHOICE_HELP = {"task": "dense task", "method": "training method"}

    def choices(self, key: str) -> tuple[str, ...]:
        return TASKS if key == "task" else tuple(available_dense_methods())

    def check_choice(self, key: str, value: str) -> None:
        if key == "method":
            try:
                dense_method_class(value)  # the error lists the valid methods and suggests the closest
            except ValueError as e:
                raise ConfigError(str(e)) from None
            return
        super().check_choice(key, value)

    def section_title(self, name: str) -> str:
        if name == "ips":
            return "ips options (dense Intra-class Patch Swap; the loss options act on segmentation)"
        return f"{name} options"

    def resolved_arch(self) -> str:
        """``model.arch``, with ``auto`` replaced by the task's light head (fcn, fasterrcnn)."""
        return AUTO_ARCH.get(self.task, "fcn") if self.model.arch == "auto" else self.model.arch

    def resolved(self) -> TransferConfig:
        out = super().resolved()
        assert isinstance(out, TransferConfig)
        out.model.arch = self.resolved_arch()
        return out

    def validate(self) -> None:
        d, t, ips = self.data, self.trainer, self.ips
        arch = self.resolved_arch()
        archs = SEGMENT_ARCHS if self.task == "segment" else DETECT_ARCHS
        if arch not in archs:
            raise ConfigError(
                f"model.arch {arch!r} does not fit task {self.task!r}: use one of {', '.join(archs)}"
            )
        if d.batch_size < 1 or d.eval_batch_size < 1:
            raise ConfigError("data.batch_size and data.eval_batch_size must be positive")
        check_trainer(t)
        try:
            ips.check(prefix="ips.")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if (d.mean is None) != (d.std is None):
            raise ConfigError("set data.mean and data.std together (one value per channel each)")
        if self.optim.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.optim.lr}")
        o = self.optim
        if (o.backbone_lr_scale, o.freeze_backbone_epochs, o.ema_decay) != (1.0, 0, 0.0):
            raise ConfigError(
                "optim.backbone_lr_scale, optim.freeze_backbone_epochs and optim.ema_decay apply to "
                "`patchswap train` (classification) only"
            )


def method_options(cfg: TransferConfig) -> Any:
    """The options of the selected dense method: its section (``ips``), or its defaults (``ce`` has none)."""
    options_class = dense_method_class(cfg.method).Options
    section = getattr(cfg, cfg.method, None) if cfg.method in SECTIONS else None
    return section if isinstance(section, options_class) else options_class()
