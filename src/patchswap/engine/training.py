"""``patchswap train``: build a classification run from its config, train it, resume it.

A run directory holds everything needed to rerun, resume or evaluate it::

    config.yaml  metrics.csv  summary.json  curves.png  tensorboard/
    checkpoints/{last,best}.ckpt  checkpoints/{last,best}.safetensors
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from patchswap.data import DataBundle, build_data_from_section
from patchswap.engine.config import RunConfig, load_config
from patchswap.engine.finetune import finetune_callbacks
from patchswap.engine.guard import RunGuard
from patchswap.engine.harness import (
    RunError,
    clear_run,
    free_run_dir,
    holds_run,
    launcher_rank,
    lightning_trainer,
    prepare_run_dir,
    resolve_precision,
    run_callbacks,
    split_metrics,
)
from patchswap.engine.loaders import PatchswapDataModule
from patchswap.engine.module import ClassifierModule
from patchswap.engine.resuming import check_matches_module, resume_config, resume_point
from patchswap.engine.selection import fit_and_select, run_record
from patchswap.evaluation.plots import plot_training_curves
from patchswap.methods import method_class
from patchswap.models import create_model, pretrained_input
from patchswap.runs import CONFIG_KEY, weights_metadata

__all__ = ["ClassificationRun", "build_bundle", "default_run_dir", "resume", "train"]


def default_run_dir(cfg: RunConfig) -> Path:
    data = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(cfg.data.name.split(",")[0]).stem.replace(":", "_"))
    model = cfg.model.name.replace(":", "_")
    return Path("runs") / f"{data}-{model}-{cfg.method}-s{cfg.trainer.seed}"


def build_bundle(cfg: RunConfig) -> DataBundle:
    return build_data_from_section(
        cfg.data, model_input=pretrained_input(cfg.model.name, cfg.model.pretrained)
    )


def check_input_size(
    model: torch.nn.Module, name: str, in_chans: int, size: tuple[int, int], num_classes: int
) -> None:
    """One forward of two blank images of the data's size (no gradients, eval mode), so a model
    built for another input size fails now, with the option that fixes it, not at the first step."""
    h, w = size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_chans, h, w))
    except Exception as e:  # noqa: BLE001 - any failure here means the model cannot take these images
        hint = (
            f"timm models take their input size as a constructor argument: --model.kwargs img_size={h} "
            f"(a ViT also wants a patch size that divides it, e.g. img_size={h},patch_size=4)"
            if name.lower().startswith("timm:")
            else "pass the constructor's size arguments with --model.kwargs NAME=VALUE"
        )
        raise RunError(
            f"model {name} does not accept the data's {in_chans}x{h}x{w} images "
            f"({type(e).__name__}: {e}); {hint}, or resize the data with --data.image_size"
        ) from None
    finally:
        model.train(was_training)
    if isinstance(out, torch.Tensor) and tuple(out.shape) != (2, num_classes):
        raise RunError(
            f"model {name} returns {tuple(out.shape)} for 2 images of {num_classes} classes; a "
            f"classifier must return logits [N, {num_classes}]"
        )


class ClassificationRun:
    """The objects of one run, built from a config (data, model, method, module, loaders)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
        self.bundle = build_bundle(cfg)
        b = self.bundle
        if b.num_classes < 2:
            raise RunError(
                f"data {cfg.data.name!r} has {b.num_classes} class ({', '.join(map(str, b.classes))}): a "
                "classifier needs at least two classes"
            )
        self.model = create_model(
            cfg.model.name,
            b.num_classes,
            in_chans=b.in_chans,
            pretrained=cfg.model.pretrained,
            **cfg.model.kwargs,
            reset_classifier=cfg.model.reset_classifier,
        )
        check_input_size(self.model, cfg.model.name, b.in_chans, b.image_size, b.num_classes)
        if cfg.model.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The config's own Options object (a copy: a method never changes the config it came from).
        self.method = method_class(cfg.method)(
            dataclasses.replace(cfg.method_options),
            num_classes=b.num_classes,
            num_samples=len(b.train),  # type: ignore[arg-type]
        )
        mode = None if cfg.model.compile_mode == "default" else cfg.model.compile_mode
        net = torch.compile(self.model, mode=mode) if cfg.model.compile else self.model
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
            sampler_options=self.method.sampler_options(cfg.data.batch_size),
            num_workers=cfg.data.num_workers,
        )

    def _store_config(self, checkpoint: dict[str, Any]) -> None:
        ClassifierModule.on_save_checkpoint(self.module, checkpoint)  # the epoch's generator
        checkpoint[CONFIG_KEY] = self.cfg.to_dict()

    def weights_metadata(self) -> dict[str, str]:
        """What a .safetensors file of this run holds, written into its header."""
        b, m = self.bundle, self.cfg.model
        return weights_metadata(
            architecture=m.name,
            model_kwargs=m.kwargs,
            num_classes=b.num_classes,
            classes=list(b.classes),
            input_size=[b.in_chans, *b.image_size],
            mean=list(b.mean),
            std=list(b.std),
            method=self.cfg.method,
            data=self.cfg.data.name,
        )

    def trainer(self, run_dir: Path | None, *, callbacks: list | None = None, fit: bool = True) -> L.Trainer:
        return lightning_trainer(self.cfg.trainer, run_dir, callbacks=callbacks, fit=fit)


def train(
    cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, checkpoint: Path | None = None
) -> dict[str, Any]:
    """Train, select the best epoch on the validation split, test it once; returns the summary.

    Without ``trainer.run_dir`` the run goes to ``runs/<data>-<model>-<method>-s<seed>``, or to the
    first of ``...-2``, ``...-3`` that is free. An explicit run directory that holds a run is an error
    unless ``overwrite``. A start that fails before the first checkpoint leaves no run directory behind.
    """
    explicit = bool(cfg.trainer.run_dir)
    run_dir = Path(cfg.trainer.run_dir) if explicit else default_run_dir(cfg)
    if (
        not resume
        and cfg.trainer.requeue
        and os.environ.get("SLURM_JOB_ID")
        and holds_run(run_dir)
        and not (run_dir / "summary.json").exists()
    ):
        return resume_run(run_dir)  # a requeued SLURM job: the same command continues the run
    if not explicit and not resume and not overwrite:
        run_dir = free_run_dir(run_dir)
    cfg.trainer.run_dir = str(run_dir)
    precision, why = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    auto = cfg.trainer.precision == "auto"
    cfg.trainer.precision = precision
    created = not run_dir.exists()
    last = prepare_run_dir(run_dir, cfg, resume=resume, command="train", overwrite=overwrite)
    try:
        return _train(cfg, run_dir, last, resume=resume, checkpoint=checkpoint, why=why if auto else None)
    except BaseException:
        if not resume and launcher_rank() == 0 and not holds_run(run_dir):
            clear_run(run_dir, remove_dir=created)  # a failed start leaves no config-only run directory
        raise


def _train(
    cfg: RunConfig, run_dir: Path, last: Path, *, resume: bool, checkpoint: Path | None, why: str | None
) -> dict[str, Any]:
    resume_from = checkpoint or last
    run = ClassificationRun(cfg)
    if why is not None and launcher_rank() == 0:  # the run is built: say which precision auto chose
        print(
            f"precision  {cfg.trainer.precision} (trainer.precision auto: {why})", file=sys.stderr, flush=True
        )
    if resume:
        check_matches_module(resume_from, run.module)
        if launcher_rank() == 0:  # only now: the checkpoint has loaded and matched the run it describes
            cfg.dump(run_dir / "config.yaml")
    run.method.prepare_training()
    guard = RunGuard(run_dir, cfg.trainer, resume_command=f"patchswap train --resume {run_dir}")
    has_val = run.bundle.val is not None
    checkpoint, callbacks = run_callbacks(
        run_dir, "val/acc" if has_val else None, cfg.trainer.early_stopping_patience, guard=guard
    )
    callbacks += finetune_callbacks(cfg.optim)  # frozen backbone epochs, EMA weights (engine/finetune.py)
    if not has_val:
        warnings.warn("no validation split (data.val_split=0): the last epoch is taken as best", stacklevel=2)

    selected = fit_and_select(
        run,
        run_dir,
        callbacks,
        checkpoint,
        resume_from if resume else None,
        validate=has_val,
        test=run.bundle.test is not None,
    )
    if selected is None:
        return {}
    summary = {
        "run_dir": str(run_dir),
        "data": run.bundle.describe(),
        "model": cfg.model.name,
        "method": cfg.method,
        "seed": cfg.trainer.seed,
        "selected_on": "val/acc" if has_val else "last epoch",
        "val": split_metrics(selected.val, "val"),
        "test": split_metrics(selected.test, "test"),
        **run_record(run_dir, selected.best),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_training_curves(
        run_dir / "metrics.csv", run_dir / "curves.png", title=f"{cfg.method} | {cfg.model.name}"
    )
    return summary


def resume(
    run_dir: str | Path, overrides: dict[str, str] | None = None, *, from_checkpoint: str | Path | None = None
) -> dict[str, Any]:
    """Continue a killed or finished run from its last checkpoint (or ``from_checkpoint``), with its
    saved config. Overrides may only change what is safe to change mid-run (more epochs, devices,
    progress and logging, checkpoint cadence: :data:`patchswap.engine.resuming.SAFE_ON_RESUME`)."""
    return resume_run(Path(run_dir), overrides, from_checkpoint=from_checkpoint)


def resume_run(
    run_dir: Path, overrides: dict[str, str] | None = None, *, from_checkpoint: str | Path | None = None
) -> dict[str, Any]:
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise RunError(f"{run_dir} is not a run directory: {cfg_path} is missing")
    point, ckpt = resume_point(run_dir, from_checkpoint, command="train")
    cfg = resume_config(run_dir, ckpt.get(CONFIG_KEY), overrides, load=load_config, command="train")
    del ckpt
    cfg.trainer.run_dir = str(run_dir)
    return train(cfg, resume=True, checkpoint=point)
