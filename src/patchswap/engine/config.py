"""Run configuration: typed sections, YAML files, command-line overrides, strict validation.

One source of truth: the dataclasses below (and each method's ``Options``). The YAML schema, the
``--section.key`` flags and their ``--help`` text (each field's ``opt(default, help)``) all come from
them, and any key they do not know is an error with a suggestion. The machinery shared with the
transfer config lives in :mod:`patchswap.config_base`.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchswap.config_base import (
    ConfigBase,
    ConfigError,
    apply_mapping,
    load_into,
    opt,
    parse_value,
    section_fields,
)
from patchswap.methods import available_methods, method_class
from patchswap.models import available_models, check_model_kwargs

__all__ = [
    "ConfigError",
    "DataSection",
    "ModelSection",
    "OptimSection",
    "RunConfig",
    "TrainerSection",
    "apply_mapping",
    "load_config",
    "parse_value",
    "section_fields",
]

_ZOO = ", ".join(m for m in available_models() if ":" not in m)


@dataclass
class DataSection:
    name: str = opt(
        "digits", "dataset: digits, cifar10/100, mnist, fashion-mnist, svhn, stl10, npz:PATHS, folder:DIR"
    )
    data_dir: str = opt("./data", "where torchvision datasets live (or are downloaded to)")
    download: bool = opt(False, "let torchvision download a named dataset (needs a network)")
    val_split: float | int = opt(0.1, "fraction (or count) of training images held out for every selection")
    test_split: float | int | None = opt(
        None, "carve a test split (fraction or count) when the data has none"
    )
    split_seed: int = opt(0, "seeds the val/test carve-outs only, so all training seeds share them")
    train_subset: int | None = opt(None, "keep this many training images (stratified)")
    image_size: int | None = opt(None, "resize in-memory images / crop size of image folders")
    label_noise: str | None = opt(
        None, "symmetric:0.8 or asymmetric:0.4 (train and val labels; test stays clean)"
    )
    batch_size: int = opt(
        64,
        "samples drawn per step; pairs made by a partner per sample (cskd, ips.pairing partner) double "
        "it; ips in_batch / half pairs inside it",
    )
    eval_batch_size: int = opt(256, "images per step when validating and testing")
    num_workers: int = opt(0, "DataLoader workers for image folders (in-memory data needs none)")
    on_bad_image: str = opt("skip", "image folders: skip (count + warning) or error on unusable files")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass
class ModelSection:
    name: str = opt("resnet8", f"a zoo name ({_ZOO}), timm:NAME or torchvision:NAME")
    pretrained: str | bool | None = opt(
        None,
        "local weights file (.safetensors, .pt, .ckpt); true: timm hub weights; torchvision: IMAGENET1K_V2",
    )
    kwargs: dict[str, Any] = opt(
        doc="arguments of the model's constructor (timm / torchvision / zoo), e.g. "
        "img_size=32,patch_size=4,drop_path_rate=0.1",
        factory=dict,
    )
    reset_classifier: bool = opt(
        False, "re-initialise the classifier of a pretrained file even when its shape fits (other classes)"
    )
    channels_last: bool = opt(
        True, "NHWC memory format: faster convolutions on CPUs (oneDNN) and recent GPUs"
    )
    compile: bool = opt(False, "torch.compile the model")
    compile_mode: str = opt(
        "default",
        "with model.compile: default | reduce-overhead (CUDA graphs: fewer kernel launches, for small "
        "models and batches on a GPU) | max-autotune (longer compile, tuned kernels)",
    )


@dataclass
class OptimSection:
    optimizer: str = opt("sgd", "sgd | adamw")
    lr: float = opt(0.05, "learning rate: the peak of the schedule (after any warm-up)")
    momentum: float = opt(0.9, "SGD momentum (unused by adamw)")
    nesterov: bool = opt(False, "Nesterov momentum (SGD)")
    weight_decay: float = opt(5e-4, "L2 penalty (SGD) or decoupled weight decay (AdamW)")
    schedule: str = opt("cosine", "cosine | multistep | onecycle | constant")
    milestones: list[int] = opt(doc="epochs where multistep multiplies lr by lr_decay", factory=list)
    lr_decay: float = opt(0.1, "factor applied to lr at each multistep milestone")
    warmup_epochs: int = opt(0, "linear warm-up (cosine, multistep, constant)")
    backbone_lr_scale: float = opt(
        1.0, "fine-tuning: lr of everything but the classifier head = lr x this (e.g. 0.1)"
    )
    freeze_backbone_epochs: int = opt(
        0,
        "fine-tuning: train only the classifier head for the first N epochs (backbone + BN stats frozen)",
    )
    ema_decay: float = opt(
        0.0, "EMA of the weights (timm ModelEmaV3), e.g. 0.999: val, test and best/last use it; 0 = off"
    )
    ema_warmup: bool = opt(
        True, "EMA decay ramps up over the first steps (timm's warm-up); false: fixed decay"
    )


@dataclass
class TrainerSection:
    epochs: int = opt(30, "training epochs")
    seed: int = opt(0, "fixes init, data order, pairing, augmentation and swaps")
    accelerator: str = opt("auto", "auto | cpu | gpu | mps")
    devices: str = opt("1", "number of devices, or auto")
    strategy: str = opt("auto", "auto | ddp | ...")
    num_nodes: int = opt(1, "machines (with torchrun or SLURM; see docs/distributed.md)")
    cudnn_benchmark: bool = opt(True, "let cuDNN pick the fastest kernels for fixed input sizes (GPU)")
    precision: str = opt(
        "auto",
        "auto | 32-true | bf16-mixed | 16-mixed (auto: bf16-mixed on GPUs and CPUs with native bfloat16, "
        "else 32-true; the run's config.yaml keeps the resolved value)",
    )
    run_dir: str | None = opt(None, "where the run is written (none: runs/<data>-<model>-<method>-s<seed>)")
    val_every_n_epochs: int = opt(
        1, "validate every N epochs (and on the last one): cheaper small-data studies"
    )
    early_stopping_patience: int = opt(0, "validation checks without improvement before stopping (0 = off)")
    progress_bar: bool = opt(
        True, "a progress bar while training where stdout is a terminal (else one line per epoch)"
    )
    log_every_n_steps: int = opt(20, "log training metrics every N steps")
    limit_train_batches: float = opt(1.0, "fraction (<= 1) or count of batches per epoch, for smoke runs")
    deterministic: bool = opt(False, "ask torch for deterministic kernels (slower on GPU)")
    lean_loop: bool = opt(
        True,
        "run each training step directly instead of through Lightning's per-step machinery where the run "
        "allows it (one device, automatic optimisation; the same hooks, counters and weights)",
    )
    checkpoint_every_n_steps: int = opt(
        0, "also write last.ckpt every N training steps inside an epoch (0 = at epoch ends only)"
    )
    checkpoint_every_minutes: float = opt(
        0.0, "also write last.ckpt inside an epoch when this many minutes passed since the last one (0 = off)"
    )
    keep_last_k: int = opt(
        0, "keep the K newest mid-epoch checkpoints as checkpoints/step-N.ckpt besides last and best"
    )
    on_nonfinite: str = opt("stop", "stop | skip_step: what a NaN or infinite training loss does")
    requeue: bool = opt(
        False,
        "on SLURM: requeue the job after a stop signal, and resume it when it restarts (docs/distributed.md)",
    )


SECTIONS: dict[str, type] = {
    "data": DataSection,
    "model": ModelSection,
    "optim": OptimSection,
    "trainer": TrainerSection,
}


def _method_sections() -> dict[str, type]:
    return {name: method_class(name).Options for name in available_methods()}


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].rstrip(".") if (text or "").strip() else ""


@dataclass
class RunConfig(ConfigBase):
    """The whole run: which method, plus one section per part and one per method's options.

    Every method's options are held (so ``--ips.prob`` can be set whatever the method), but a saved
    config (:meth:`to_dict`, ``config.yaml``) holds only the active method's section; an older config
    that holds every method's section still loads.
    """

    method: str = "ips"
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    methods: dict[str, Any] = field(default_factory=lambda: {n: c() for n, c in _method_sections().items()})

    TOP_LEVEL = ("method",)
    SECTIONS = SECTIONS
    CHOICE_HELP = {"method": "training method"}

    @property
    def method_options(self) -> Any:
        return self.methods[self.method]

    def choices(self, key: str) -> tuple[str, ...]:
        return tuple(available_methods())

    def check_choice(self, key: str, value: str) -> None:
        method_class(value)  # the error lists the valid methods and suggests the closest

    def sections(self) -> dict[str, Any]:
        return {**{n: getattr(self, n) for n in SECTIONS}, **self.methods}

    def saved_sections(self) -> list[str]:
        return [*SECTIONS, self.method]

    def section_title(self, name: str) -> str:
        if name in SECTIONS:
            return f"{name} options"
        doc = _first_line(inspect.getdoc(sys.modules[method_class(name).__module__]))
        return f"method {name!r} options - {doc}" if doc else f"method {name!r} options"

    def validate(self) -> None:
        method_class(self.method)
        d, o, t = self.data, self.optim, self.trainer
        if d.batch_size < 1 or d.eval_batch_size < 1:
            raise ConfigError("data.batch_size and data.eval_batch_size must be positive")
        check_trainer(t)
        try:
            check_model_kwargs(self.model.kwargs or {})
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.model.compile_mode not in COMPILE_MODES:
            modes = ", ".join(COMPILE_MODES)
            raise ConfigError(f"model.compile_mode must be one of {modes}, got {self.model.compile_mode!r}")
        if o.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optim.optimizer must be sgd or adamw, got {o.optimizer!r}")
        if o.schedule not in ("cosine", "multistep", "onecycle", "constant"):
            raise ConfigError(
                f"optim.schedule must be cosine, multistep, onecycle or constant, got {o.schedule!r}"
            )
        if o.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {o.lr}")
        check_finetune(o)
        if o.schedule == "multistep" and not o.milestones:
            raise ConfigError(
                "optim.schedule=multistep needs optim.milestones, e.g. --optim.milestones 150,180,210"
            )


def check_finetune(o: OptimSection) -> None:
    """Ranges of the fine-tuning keys (backbone lr scale, frozen epochs, EMA)."""
    if o.backbone_lr_scale < 0:
        raise ConfigError(f"optim.backbone_lr_scale must be >= 0, got {o.backbone_lr_scale}")
    if o.freeze_backbone_epochs < 0:
        raise ConfigError(f"optim.freeze_backbone_epochs must be >= 0, got {o.freeze_backbone_epochs}")
    if not 0 <= o.ema_decay < 1:
        raise ConfigError(f"optim.ema_decay must be in [0, 1) (0 = off), got {o.ema_decay}")


def check_trainer(t: TrainerSection) -> None:
    """Checks of the trainer section shared by every config class."""
    if t.epochs < 1:
        raise ConfigError(f"trainer.epochs must be at least 1, got {t.epochs}")
    if t.precision not in (
        "auto",
        "32-true",
        "32",
        "bf16-mixed",
        "16-mixed",
        "bf16-true",
        "16-true",
        "64-true",
    ):
        raise ConfigError(
            f"trainer.precision must be auto, 32-true, bf16-mixed or 16-mixed, got {t.precision!r}"
        )
    if t.on_nonfinite not in ("stop", "skip_step"):
        raise ConfigError(f"trainer.on_nonfinite must be stop or skip_step, got {t.on_nonfinite!r}")
    if t.checkpoint_every_n_steps < 0 or t.checkpoint_every_minutes < 0 or t.keep_last_k < 0:
        raise ConfigError(
            "trainer.checkpoint_every_n_steps, trainer.checkpoint_every_minutes and trainer.keep_last_k "
            "must be 0 (off) or positive"
        )
    if t.limit_train_batches <= 0:
        raise ConfigError("trainer.limit_train_batches must be positive")
    if t.val_every_n_epochs < 1 or t.epochs % t.val_every_n_epochs:
        raise ConfigError(
            f"trainer.val_every_n_epochs must be a positive divisor of trainer.epochs ({t.epochs})"
            f" so the last epoch is validated, got {t.val_every_n_epochs}"
        )


def load_config(
    paths: list[str | Path] | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Defaults, then each YAML file in order, then ``section.key -> text`` overrides; validated.

    ``factory`` makes the defaults (another config class, e.g. the transfer config); the default is
    :class:`RunConfig`.
    """
    return load_into((factory or RunConfig)(), paths, overrides)
