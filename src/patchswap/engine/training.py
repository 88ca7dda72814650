"""``patchswap train``: build a classification run from its config, train it, resume it.

A run directory holds everything needed to rerun, resume or evaluate it::

    config.yaml  metrics.csv  summary.json  curves.png  tensorboard/
    checkpoints/{last,best}.ckpt  checkpoints/{last,best}.safetensors
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from patchswap.data import DataBundle, build_data_from_section
from patchswap.engine.callbacks import read_metrics, training_time
from patchswap.engine.config import RunConfig, load_config
from patchswap.engine.finetune import finetune_callbacks
from patchswap.engine.harness import (
    RunError,
    fit_on_all_ranks,
    lightning_trainer,
    prepare_run_dir,
    quiet_lightning,
    run_callbacks,
    split_metrics,
)
from patchswap.engine.loaders import PatchswapDataModule
from patchswap.engine.module import ClassifierModule
from patchswap.evaluation.plots import plot_training_curves
from patchswap.methods import method_class
from patchswap.models import create_model, pretrained_input
from patchswap.runs import (
    CONFIG_KEY,
    load_checkpoint,
    run_relative,
    save_weights,
)

__all__ = ["ClassificationRun", "build_bundle", "default_run_dir", "resume", "train"]


def default_run_dir(cfg: RunConfig) -> Path:
    data = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(cfg.data.name.split(",")[0]).stem.replace(":", "_"))
    model = cfg.model.name.replace(":", "_")
    return Path("runs") / f"{data}-{model}-{cfg.method}-s{cfg.trainer.seed}"


def build_bundle(cfg: RunConfig) -> DataBundle:
    return build_data_from_section(
        cfg.data, model_input=pretrained_input(cfg.model.name, cfg.model.pretrained)
    )


class ClassificationRun:
    """The objects of one run, built from a config (data, model, method, module, loaders)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
        self.bundle = build_bundle(cfg)
        b = self.bundle
        self.model = create_model(
            cfg.model.name,
            b.num_classes,
            in_chans=b.in_chans,
            pretrained=cfg.model.pretrained,
            reset_classifier=cfg.model.reset_classifier,
        )
        if cfg.model.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The config's own Options object (a copy: a method never changes the config it came from).
        self.method = method_class(cfg.method)(
            dataclasses.replace(cfg.method_options),
            num_classes=b.num_classes,
            num_samples=len(b.train),  # type: ignore[arg-type]
        )
        net = torch.compile(self.model) if cfg.model.compile else self.model
        self.module = ClassifierModule(
            net,  # type: ignore[arg-type]
            self.method,
            num_classes=b.num_classes,
            train_augment=b.train_augment,
            eval_augment=b.eval_augment,
            optim=cfg.optim,
            seed=cfg.trainer.seed,
            channels_last=cfg.model.channels_last,
        )
        self.module.on_save_checkpoint = self._store_config  # type: ignore[method-assign]
        self.datamodule = PatchswapDataModule(
            b,
            batch_size=cfg.data.batch_size,
            eval_batch_size=cfg.data.eval_batch_size,
            seed=cfg.trainer.seed,
            pairs=self.method.needs_pairs,
            sampler_options=self.method.sampler_options(),
            num_workers=cfg.data.num_workers,
        )

    def _store_config(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.cfg.to_dict()

    def trainer(self, run_dir: Path | None, *, callbacks: list | None = None, fit: bool = True) -> L.Trainer:
        return lightning_trainer(self.cfg.trainer, run_dir, callbacks=callbacks, fit=fit)


def train(cfg: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train, select the best epoch on the validation split, test it once; returns the summary."""
    run_dir = Path(cfg.trainer.run_dir) if cfg.trainer.run_dir else default_run_dir(cfg)
    cfg.trainer.run_dir = str(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last = prepare_run_dir(run_dir, cfg, resume=resume, command="train")
    run = ClassificationRun(cfg)
    run.method.prepare_training()
    has_val = run.bundle.val is not None
    checkpoint, callbacks = run_callbacks(
        run_dir, "val/acc" if has_val else None, cfg.trainer.early_stopping_patience
    )
    callbacks += finetune_callbacks(cfg.optim)  # frozen backbone epochs, EMA weights (engine/finetune.py)
    if not has_val:
        warnings.warn("no validation split (data.val_split=0): the last epoch is taken as best", stacklevel=2)

    with quiet_lightning():
        if not fit_on_all_ranks(run.trainer(run_dir, callbacks=callbacks), run, last if resume else None):
            return {}
        save_weights(run.model, ckpt_dir / "last.safetensors")
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
        evaluator = run.trainer(None, fit=False)
        val = (
            split_metrics(
                evaluator.validate(run.module, datamodule=run.datamodule, ckpt_path=str(best), verbose=False),
                "val",
            )
            if has_val
            else {}
        )
        save_weights(run.model, ckpt_dir / "best.safetensors")
        test = {}
        if run.bundle.test is not None:
            test = split_metrics(
                evaluator.test(run.module, datamodule=run.datamodule, ckpt_path=str(best), verbose=False),
                "test",
            )

    best_epoch = int(load_checkpoint(best)["epoch"]) if best.exists() else None
    rows = read_metrics(run_dir / "metrics.csv")
    fit_seconds, images = training_time(rows)
    summary = {
        "run_dir": str(run_dir),
        "data": run.bundle.describe(),
        "model": cfg.model.name,
        "method": cfg.method,
        "seed": cfg.trainer.seed,
        "epochs_run": len(rows),
        "best_epoch": None if best_epoch is None else best_epoch + 1,
        "selected_on": "val/acc" if has_val else "last epoch",
        "val": val,
        "test": test,
        "train_seconds": round(fit_seconds, 2),
        "train_images_per_s": round(images / fit_seconds, 1) if fit_seconds else None,
        "images_seen": int(round(images)),
        "best_checkpoint": run_relative(best, run_dir),  # relative: the run dir may be moved or committed
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_training_curves(
        run_dir / "metrics.csv", run_dir / "curves.png", title=f"{cfg.method} | {cfg.model.name}"
    )
    return summary


def resume(run_dir: str | Path, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Continue a killed or finished run from its last checkpoint, with its saved config."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise RunError(f"{run_dir} is not a run directory: {cfg_path} is missing")
    cfg = load_config([cfg_path], overrides)
    cfg.trainer.run_dir = str(run_dir)
    return train(cfg, resume=True)
