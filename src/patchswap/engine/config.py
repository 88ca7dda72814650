"""Run configuration: typed sections, YAML files, command-line overrides, strict validation.

One source of truth: the dataclasses below. The YAML schema, the ``--section.key`` flags and their
``--help`` text all come from them, and any key they do not know is an error with a suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from patchswap.methods import available_methods, method_class

__all__ = ["ConfigError", "RunConfig", "apply_mapping", "load_config", "parse_value", "section_fields"]


class ConfigError(ValueError):
    """A configuration problem the user must fix (unknown key, bad value, bad file)."""


@dataclass
class DataSection:
    name: str = "digits"  # digits, cifar10/100, mnist, fashion-mnist, svhn, stl10, npz:PATHS, folder:DIR
    data_dir: str = "./data"  # where torchvision datasets live (or are downloaded to)
    download: bool = False  # let torchvision download a named dataset (needs a network)
    val_split: float | int = 0.1  # fraction (or count) of training images held out for every selection
    test_split: float | int | None = None  # carve a test split (fraction or count) when the data has none
    split_seed: int = 0  # seeds the val/test carve-outs only, so all training seeds share them
    train_subset: int | None = None  # keep this many training images (stratified)
    image_size: int | None = None  # resize in-memory images / crop size of image folders
    label_noise: str | None = None  # symmetric:0.8 or asymmetric:0.4 (train and val labels; test stays clean)
    batch_size: int = 64  # samples drawn per step; pair methods add one partner per sample
    eval_batch_size: int = 256
    num_workers: int = 0  # DataLoader workers for image folders (in-memory data needs none)


@dataclass
class ModelSection:
    name: str = "resnet8"  # a zoo name, timm:NAME or torchvision:NAME
    pretrained: str | None = None  # local weights file (.safetensors, .pt, .ckpt)
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPUs (oneDNN) and recent GPUs
    compile: bool = False  # torch.compile the model


@dataclass
class OptimSection:
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | multistep | onecycle | constant
    milestones: list[int] = field(default_factory=list)  # epochs where multistep multiplies lr by lr_decay
    lr_decay: float = 0.1
    warmup_epochs: int = 0  # linear warm-up (cosine, multistep, constant)


@dataclass
class TrainerSection:
    epochs: int = 30
    seed: int = 0  # fixes init, data order, pairing, augmentation and swaps
    accelerator: str = "auto"  # auto | cpu | gpu | mps
    devices: str = "1"  # number of devices, or auto
    strategy: str = "auto"  # auto | ddp | ...
    num_nodes: int = 1  # machines (with torchrun or SLURM; see docs/distributed.md)
    cudnn_benchmark: bool = True  # let cuDNN pick the fastest kernels for fixed input sizes (GPU)
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    run_dir: str | None = None  # default: runs/<data>-<model>-<method>-s<seed>
    val_every_n_epochs: int = 1  # validate every N epochs (and on the last one): cheaper small-data studies
    early_stopping_patience: int = 0  # validation checks without improvement before stopping (0 = off)
    progress_bar: bool = True
    log_every_n_steps: int = 20
    limit_train_batches: float = 1.0  # fraction (<= 1) or count of batches per epoch, for smoke runs
    deterministic: bool = False  # ask torch for deterministic kernels (slower on GPU)


SECTIONS: dict[str, type] = {
    "data": DataSection,
    "model": ModelSection,
    "optim": OptimSection,
    "trainer": TrainerSection,
}


def _method_sections() -> dict[str, type]:
    return {name: method_class(name).Options for name in available_methods()}


@dataclass
class RunConfig:
    """The whole run: which method, plus one section per part and one per method's options."""

    method: str = "ips"
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    methods: dict[str, Any] = field(default_factory=lambda: {n: c() for n, c in _method_sections().items()})

    TOP_LEVEL = ("method",)

    @property
    def method_options(self) -> Any:
        return self.methods[self.method]

    def top_level_help(self) -> dict[str, str]:
        """Top-level choice -> help text, for generating command-line flags."""
        return {"method": f"training method: {', '.join(available_methods())}"}

    def flag_sections(self) -> dict[str, tuple[Any, str]]:
        """Section name -> (defaults object, --help title), for generating command-line flags."""
        out: dict[str, tuple[Any, str]] = {n: (getattr(self, n), f"{n} options") for n in SECTIONS}
        for name in available_methods():
            module = sys.modules[method_class(name).__module__]
            doc = (inspect.getdoc(module) or "").splitlines()[0]
            out[name] = (self.methods[name], f"method {name!r} options: {doc}")
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        for name in SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        for name, opts in self.methods.items():
            out[name] = dataclasses.asdict(opts)
        return out

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def set(self, dotted: str, raw: Any, *, from_text: bool = False) -> None:
        """Set ``section.key`` (or ``method``) to ``raw``, parsed from text when ``from_text``."""
        if dotted == "method":
            method_class(str(raw))  # validates with the list of valid methods
            self.method = str(raw)
            return
        set_section_key(self, dotted, raw, from_text=from_text)

    def _section(self, name: str) -> Any:
        if name in SECTIONS:
            return getattr(self, name)
        if name in self.methods:
            return self.methods[name]
        raise ConfigError(_unknown(name, ["method", *SECTIONS, *self.methods]))

    def validate(self) -> None:
        method_class(self.method)
        d, o, t = self.data, self.optim, self.trainer
        if d.batch_size < 1 or d.eval_batch_size < 1:
            raise ConfigError("data.batch_size and data.eval_batch_size must be positive")
        check_trainer(t)
        if o.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optim.optimizer must be sgd or adamw, got {o.optimizer!r}")
        if o.schedule not in ("cosine", "multistep", "onecycle", "constant"):
            raise ConfigError(
                f"optim.schedule must be cosine, multistep, onecycle or constant, got {o.schedule!r}"
            )
        if o.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {o.lr}")
        if o.schedule == "multistep" and not o.milestones:
            raise ConfigError(
                "optim.schedule=multistep needs optim.milestones, e.g. --optim.milestones 150,180,210"
            )


def set_section_key(cfg: Any, dotted: str, raw: Any, *, from_text: bool = False) -> None:
    """Set ``section.key`` of any config class (one with ``_section(name)``), checked and parsed."""
    section_name, _, key = dotted.partition(".")
    section = cfg._section(section_name)
    hints = section_fields(type(section))
    if key not in hints:
        raise ConfigError(_unknown(f"{section_name}.{key}", [f"{section_name}.{k}" for k in hints]))
    setattr(section, key, parse_value(raw, hints[key], f"{section_name}.{key}", from_text=from_text))


def check_trainer(t: TrainerSection) -> None:
    """Checks of the trainer section shared by every config class."""
    if t.epochs < 1:
        raise ConfigError(f"trainer.epochs must be at least 1, got {t.epochs}")
    if t.limit_train_batches <= 0:
        raise ConfigError("trainer.limit_train_batches must be positive")
    if t.val_every_n_epochs < 1 or t.epochs % t.val_every_n_epochs:
        raise ConfigError(
            f"trainer.val_every_n_epochs must be a positive divisor of trainer.epochs ({t.epochs})"
            f" so the last epoch is validated, got {t.val_every_n_epochs}"
        )


def section_fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown config key {key!r}{hint}; valid keys: {', '.join(valid)}"


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(raw: Any, tp: Any, key: str, *, from_text: bool = False) -> Any:
    """Coerce ``raw`` (YAML value, or command-line text when ``from_text``) to annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None or (from_text and str(raw).lower() in ("none", "null", "")):
            if type(None) in typing.get_args(tp):
                return None
        errors = []
        for arg in sorted(args, key=lambda a: a is not int):  # int before float: "3" stays a count
            try:
                return parse_value(raw, arg, key, from_text=from_text)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: cannot read {raw!r} as {tp}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if from_text and isinstance(raw, str):
            raw = [p for p in raw.replace(" ", "").split(",") if p]
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {raw!r}")
        return [parse_value(v, item, key, from_text=from_text) for v in raw]
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ConfigError(f"{key} must be true or false, got {raw!r}")
    if tp is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key} must be an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer() and not from_text:
            return int(raw)
        if isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {raw!r}")
    if tp is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key} must be a number, got {raw!r}")
        if isinstance(raw, (int, float)):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {raw!r}")
    if tp is str:
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            return str(raw)
        raise ConfigError(f"{key} must be a string, got {raw!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def apply_mapping(cfg: Any, data: dict[str, Any], source: str) -> None:
    """Apply a parsed YAML mapping (top-level choices such as ``method``, then sections) to ``cfg``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    top = getattr(cfg, "TOP_LEVEL", ("method",))
    for key in top:  # first: choosing a method decides which sections exist
        if key in data:
            cfg.set(key, data[key])
    for name, body in data.items():
        if name in top:
            continue
        cfg._section(name)  # unknown section -> error with suggestion
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, got {body!r}")
        for key, value in body.items():
            cfg.set(f"{name}.{key}", value)


def load_config(
    paths: list[str | Path] | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Defaults, then each YAML file in order, then ``section.key -> text`` overrides; validated.

    ``factory`` makes the defaults (another config class with the same interface, e.g. the transfer
    config); the default is :class:`RunConfig`.
    """
    cfg = (factory or RunConfig)()
    for path in paths or []:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {e}") from e
        try:
            apply_mapping(cfg, data, str(p))
        except ValueError as e:
            raise ConfigError(f"{p}: {e}") from e
    for key, text in (overrides or {}).items():
        cfg.set(key, text, from_text=True)
    cfg.validate()
    return cfg
