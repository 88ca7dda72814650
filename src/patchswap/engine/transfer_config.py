"""Configuration of ``patchswap transfer``: a classification backbone fine-tuned on a dense task.

Same machinery as the training config (typed sections, YAML files, ``--section.key`` flags, unknown
keys are errors with suggestions); the optimiser and trainer sections are the training ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from patchswap.dense.methods import available_dense_methods, dense_method_class
from patchswap.engine.config import (
    ConfigError,
    OptimSection,
    TrainerSection,
    _unknown,
    check_trainer,
    set_section_key,
)

__all__ = ["TASKS", "TransferConfig", "method_options"]

TASKS = ("segment", "detect")
SEGMENT_ARCHS = ("deeplabv3", "fcn")
DETECT_ARCHS = ("fasterrcnn", "retinanet")


@dataclass
class DenseDataSection:
    name: str = "scenes"  # scenes (MNIST digits on canvases), voc, voc2007 (detection), coco:DIR
    data_dir: str = "../shared/data"  # scenes: folder of mnist-*.npz; voc: parent of VOCdevkit
    download: bool = False  # let torchvision download VOC (needs a network)
    train_count: int | None = None  # scenes: training canvases (default 4000); others: first N after val
    val_count: int | None = None  # scenes: canvases (default 1000); voc: images carved out of train (500)
    test_count: int | None = None  # scenes: test canvases (default 1000)
    canvas: int = 64  # scenes: canvas side in pixels
    scene_seed: int = 0  # scenes: seeds the canvases (not the training), so all runs share them
    crop_size: int = 320  # voc/coco segmentation: random crop side for training batches
    flip: bool = False  # random horizontal flips (off for digits: a mirrored digit is no digit)
    mean: list[float] | None = None  # normalisation; default: MNIST for scenes, ImageNet otherwise
    std: list[float] | None = None
    batch_size: int = 16  # images per step; ips adds one same-class partner per image
    eval_batch_size: int = 32
    num_workers: int = 0


@dataclass
class DenseModelSection:
    arch: str = "auto"  # segment: deeplabv3 | fcn; detect: fasterrcnn | retinanet; auto: fcn / fasterrcnn
    backbone: str = "resnet8"  # a patchswap run dir or checkpoint (trained weights), or a model name
    fpn_channels: int = 64  # detection: feature pyramid width


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


@dataclass
class TransferConfig:
    """A dense fine-tuning run: task, method (ce or ips) and one section per part."""

    task: str = "segment"
    method: str = "ce"
    data: DenseDataSection = field(default_factory=DenseDataSection)
    model: DenseModelSection = field(default_factory=DenseModelSection)
    optim: OptimSection = field(default_factory=_transfer_optim)
    trainer: TrainerSection = field(default_factory=_transfer_trainer)
    ips: DenseIPSSection = field(default_factory=DenseIPSSection)

    TOP_LEVEL = ("task", "method")

    def top_level_help(self) -> dict[str, str]:
        return {
            "task": f"dense task: {', '.join(TASKS)}",
            "method": f"training method: {', '.join(available_dense_methods())}",
        }

    def flag_sections(self) -> dict[str, tuple[Any, str]]:
        titles = {"ips": "ips options (dense Intra-class Patch Swap; the loss options act on segmentation)"}
        return {n: (getattr(self, n), titles.get(n, f"{n} options")) for n in SECTIONS}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "method": self.method}
        for name in SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        return out

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def set(self, dotted: str, raw: Any, *, from_text: bool = False) -> None:
        if dotted == "task" and str(raw) not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {raw!r}")
        if dotted == "method":
            try:
                dense_method_class(str(raw))
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if dotted in self.TOP_LEVEL:
            setattr(self, dotted, str(raw))
            return
        set_section_key(self, dotted, raw, from_text=from_text)

    def _section(self, name: str) -> Any:
        if name in SECTIONS:
            return getattr(self, name)
        raise ConfigError(_unknown(name, [*self.TOP_LEVEL, *SECTIONS]))

    def validate(self) -> None:
        d, m, t, ips = self.data, self.model, self.trainer, self.ips
        archs = SEGMENT_ARCHS if self.task == "segment" else DETECT_ARCHS
        if m.arch == "auto":  # the light head of each task: fast enough for a CPU
            m.arch = "fcn" if self.task == "segment" else "fasterrcnn"
        if m.arch not in archs:
            raise ConfigError(
                f"model.arch {m.arch!r} does not fit task {self.task!r}: use one of {', '.join(archs)}"
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


def method_options(cfg: TransferConfig) -> Any:
    """The options of the selected dense method: its section (``ips``), or its defaults (``ce`` has none)."""
    options_class = dense_method_class(cfg.method).Options
    section = getattr(cfg, cfg.method, None) if cfg.method in SECTIONS else None
    return section if isinstance(section, options_class) else options_class()
