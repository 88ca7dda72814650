"""``patchswap transfer``: fine-tune a classification backbone on segmentation or detection.

The protocol behind the paper's dense-task claims: a backbone trained with ce and one trained with
ips (``patchswap train``) become the encoders of torchvision's DeepLabV3/FCN or Faster R-CNN/RetinaNet,
fine-tuned the same way (optionally with dense IPS, ``--method ips``). The run directory has the same
shape as a training run's (config.yaml, metrics.csv, TensorBoard, atomic checkpoints, summary.json,
curves.png) and a killed run resumes with ``--resume``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import lightning as L

from patchswap.dense.methods import dense_method_class
from patchswap.dense.models import build_dense_model
from patchswap.engine.config import apply_mapping, load_config
from patchswap.engine.dense_data import DenseDataModule, dense_datasets, dense_image_size, normalisation
from patchswap.engine.dense_module import DenseModule, score_key
from patchswap.engine.harness import (
    RunError,
    launcher_rank,
    lightning_trainer,
    prepare_run_dir,
    quiet_lightning,
    resolve_precision,
    run_callbacks,
)
from patchswap.engine.resuming import check_resume_change
from patchswap.engine.selection import fit_and_select, run_record
from patchswap.engine.transfer_config import TransferConfig, method_options
from patchswap.evaluation.plots import plot_training_curves
from patchswap.runs import (
    BACKBONE_KEY,
    TRANSFER_CONFIG_KEY,
    CheckpointError,
    load_checkpoint,
    locate_checkpoint,
    weights_metadata,
)

__all__ = [
    "default_transfer_dir",
    "evaluate_transfer",
    "load_transfer_config",
    "resume_transfer",
    "train_transfer",
]


def load_transfer_config(
    paths: list[str | Path] | None = None, overrides: dict[str, Any] | None = None
) -> TransferConfig:
    """Defaults, then YAML files, then ``section.key -> text`` overrides; validated."""
    return load_config(paths, overrides, factory=TransferConfig)


def default_transfer_dir(cfg: TransferConfig) -> Path:
    data = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.data.name.replace(":", "_"))
    backbone = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(cfg.model.backbone.rstrip("/")).name)
    name = f"{cfg.task}-{data}-{cfg.model.arch}-{backbone}-{cfg.method}-s{cfg.trainer.seed}"
    return Path("runs") / "transfer" / name


class _TransferRun:
    """Data, model and module of one transfer run, built from its config."""

    def __init__(self, cfg: TransferConfig) -> None:
        self.cfg = cfg
        L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
        self.datasets = dense_datasets(cfg)
        train = self.datasets["train"]
        self.mean, self.std = normalisation(cfg, train.in_chans)
        self.model, self.backbone_source, self.backbone_name = build_dense_model(
            cfg.task,
            cfg.model.arch,
            len(train.classes),
            cfg.model.backbone,
            in_chans=train.in_chans,
            image_size=dense_image_size(cfg),
            image_mean=self.mean,
            image_std=self.std,
        )
        self.module = DenseModule(
            self.model,
            task=cfg.task,
            method=dense_method_class(cfg.method)(method_options(cfg)),
            class_names=list(train.classes),
            optim=cfg.optim,
            seed=cfg.trainer.seed,
            flip=cfg.data.flip,
        )
        self.module.on_save_checkpoint = self._store_config  # type: ignore[method-assign]
        self.datamodule = DenseDataModule(cfg, self.datasets)

    def _store_config(self, checkpoint: dict[str, Any]) -> None:
        DenseModule.on_save_checkpoint(self.module, checkpoint)  # the epoch's generator
        checkpoint[TRANSFER_CONFIG_KEY] = self.cfg.to_dict()
        checkpoint[BACKBONE_KEY] = self.backbone_name

    def trainer(self, run_dir: Path | None, *, callbacks: list | None = None, fit: bool = True) -> L.Trainer:
        return lightning_trainer(self.cfg.trainer, run_dir, callbacks=callbacks, fit=fit)

    def weights_metadata(self) -> dict[str, str]:
        """What a .safetensors file of this run holds, written into its header."""
        cfg, train = self.cfg, self.datasets["train"]
        return weights_metadata(
            architecture=f"{cfg.model.arch} ({cfg.task}) on {self.backbone_name}",
            task=cfg.task,
            backbone=self.backbone_name,
            num_classes=len(train.classes),
            classes=list(train.classes),
            input_size=[train.in_chans, dense_image_size(cfg), dense_image_size(cfg)],
            mean=list(self.mean),
            std=list(self.std),
            method=cfg.method,
            data=cfg.data.name,
        )


def train_transfer(cfg: TransferConfig, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Fine-tune, select the best epoch on val (mIoU or mAP), test it once; returns the summary."""
    run_dir = Path(cfg.trainer.run_dir) if cfg.trainer.run_dir else default_transfer_dir(cfg)
    cfg.trainer.run_dir = str(run_dir)
    cfg.trainer.precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)[0]
    last = prepare_run_dir(run_dir, cfg, resume=resume, command="transfer", overwrite=overwrite)
    if resume and launcher_rank() == 0:
        cfg.dump(run_dir / "config.yaml")
    run = _TransferRun(cfg)
    monitor = score_key(cfg.task)
    checkpoint, callbacks = run_callbacks(run_dir, monitor, cfg.trainer.early_stopping_patience)
    selected = fit_and_select(run, run_dir, callbacks, checkpoint, last if resume else None)
    if selected is None:
        return {}
    summary = {
        "run_dir": str(run_dir),
        "task": cfg.task,
        "method": cfg.method,
        "arch": cfg.model.arch,
        "backbone": run.backbone_source,
        "data": cfg.data.name,
        "train_images": len(run.datasets["train"]),
        "seed": cfg.trainer.seed,
        "selected_on": monitor,
        "val": run.module.results.get("val", {}),
        "test": run.module.results.get("test", {}),
        **run_record(run_dir, selected.best),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    score = monitor.split("/")[1]
    plot_training_curves(
        run_dir / "metrics.csv",
        run_dir / "curves.png",
        title=f"{cfg.task} | {cfg.model.arch} | {cfg.method}",
        scores=(("val/" + score, f"val {score}"),),
        score_label=f"{score} (%)",
    )
    return summary


def resume_transfer(run_dir: str | Path, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Continue a killed or finished transfer run from its last checkpoint, with its saved config."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise RunError(f"{run_dir} is not a transfer run directory: config.yaml is missing")
    saved = load_transfer_config([run_dir / "config.yaml"])
    saved.trainer.run_dir = str(run_dir)
    cfg = load_transfer_config([run_dir / "config.yaml"], overrides)
    cfg.trainer.run_dir = str(run_dir)
    check_resume_change(saved.to_dict(), cfg, run_dir, "transfer")
    return train_transfer(cfg, resume=True)


def evaluate_transfer(target: str | Path, *, split: str = "test") -> dict[str, Any]:
    """mIoU / mAP (with per-class values) of a transfer checkpoint or run directory on val or test."""
    ckpt_path = locate_checkpoint(target, ("best.ckpt",))  # the transfer run's selected checkpoint
    ckpt = load_checkpoint(ckpt_path)
    if TRANSFER_CONFIG_KEY not in ckpt:
        raise CheckpointError(
            f"{ckpt_path} carries no transfer config; was it written by patchswap transfer?"
        )
    cfg = TransferConfig()
    apply_mapping(cfg, ckpt[TRANSFER_CONFIG_KEY], str(ckpt_path))
    cfg.trainer.progress_bar = False
    if ckpt.get(BACKBONE_KEY):  # the architecture alone: the checkpoint's weights replace the backbone's
        cfg.model.backbone = str(ckpt[BACKBONE_KEY])
    run = _TransferRun(cfg)
    with quiet_lightning():
        evaluator = run.trainer(None, fit=False)
        if split == "val":
            evaluator.validate(run.module, datamodule=run.datamodule, ckpt_path=str(ckpt_path), verbose=False)
        else:
            evaluator.test(run.module, datamodule=run.datamodule, ckpt_path=str(ckpt_path), verbose=False)
    return {"checkpoint": str(ckpt_path), "split": split, **run.module.results[split]}
