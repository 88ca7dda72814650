"""Build a run from its config and drive Lightning: train, resume, evaluate.

A run directory holds everything needed to rerun, resume or evaluate it::

    config.yaml  metrics.csv  summary.json  curves.png  tensorboard/
    checkpoints/{last,best}.ckpt  checkpoints/{last,best}.safetensors
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from patchswap.data import DataBundle, build_data
from patchswap.engine.callbacks import FAULT_ENV, EpochMetricsCSV, FaultInjection, read_metrics, training_time
from patchswap.engine.checkpoint import AtomicCheckpointIO, CheckpointError, load_checkpoint, save_weights
from patchswap.engine.config import ConfigError, RunConfig, TrainerSection, apply_mapping, load_config
from patchswap.engine.loaders import PatchswapDataModule
from patchswap.engine.module import ClassifierModule
from patchswap.evaluation.plots import plot_training_curves
from patchswap.methods import create_method
from patchswap.models import create_model, pretrained_input

__all__ = [
    "RunError",
    "default_run_dir",
    "evaluate",
    "lightning_trainer",
    "prepare_run_dir",
    "resume",
    "train",
]

CONFIG_KEY = "patchswap_config"


class RunError(RuntimeError):
    """A run cannot start or continue as asked (existing run dir, nothing to resume, ...)."""


def default_run_dir(cfg: RunConfig) -> Path:
    data = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(cfg.data.name.split(",")[0]).stem.replace(":", "_"))
    model = cfg.model.name.replace(":", "_")
    return Path("runs") / f"{data}-{model}-{cfg.method}-s{cfg.trainer.seed}"


def _build_bundle(cfg: RunConfig) -> DataBundle:
    d = cfg.data
    return build_data(
        d.name,
        data_dir=d.data_dir,
        download=d.download,
        val_split=d.val_split,
        test_split=d.test_split,
        split_seed=d.split_seed,
        train_subset=d.train_subset,
        image_size=d.image_size,
        label_noise=d.label_noise,
        model_input=pretrained_input(cfg.model.name, cfg.model.pretrained),
        on_bad_image=d.on_bad_image,
    )


class _Run:
    """The objects of one run, built from a config (data, model, method, module, loaders)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
        self.bundle = _build_bundle(cfg)
        b = self.bundle
        self.model = create_model(
            cfg.model.name, b.num_classes, in_chans=b.in_chans, pretrained=cfg.model.pretrained
        )
        if cfg.model.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.method = create_method(
            cfg.method,
            num_classes=b.num_classes,
            num_samples=len(b.train),  # type: ignore[arg-type]
            **dataclasses.asdict(cfg.method_options),
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


def lightning_trainer(
    t: TrainerSection, run_dir: Path | None, *, callbacks: list | None = None, fit: bool = True
) -> L.Trainer:
    """The Lightning trainer of a run (``fit``), or a one-device evaluator with exact metrics."""
    devices: Any = int(t.devices) if str(t.devices).isdigit() else t.devices
    strategy = t.strategy
    if not fit:  # evaluation after (or without) training: one device in this process, exact metrics
        devices, strategy = 1, "auto"
    limit: Any = int(t.limit_train_batches) if t.limit_train_batches > 1 else t.limit_train_batches
    cbs = list(callbacks or [])
    if t.progress_bar and fit:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps // 4)))
    logger: Any = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="") if fit else False
    return L.Trainer(
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=t.num_nodes if fit else 1,
        benchmark=t.cudnn_benchmark,
        precision=t.precision,  # type: ignore[arg-type]
        callbacks=cbs,
        logger=logger,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # our batch samplers shard pairs themselves
        enable_progress_bar=t.progress_bar and fit,
        enable_model_summary=False,
        enable_checkpointing=fit,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=limit,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=t.val_every_n_epochs,
        deterministic=t.deterministic,
        default_root_dir=str(run_dir) if run_dir else None,
    )


def run_callbacks(
    run_dir: Path, monitor: str | None, early_stopping_patience: int = 0
) -> tuple[ModelCheckpoint, list[Any]]:
    """Best/last checkpoints (selected on ``monitor``), metrics.csv, early stopping, fault injection.

    ``best.ckpt`` is written when validation improves; ``last.ckpt`` at the end of every training
    epoch by a checkpoint of its own, because Lightning's ``save_last`` only saves on validation
    epochs when validation runs every n > 1 epochs, and a killed run would lose up to n - 1 epochs.
    """
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="best",
        monitor=monitor,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    last = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="last",
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks: list[Any] = [checkpoint, last, EpochMetricsCSV(run_dir / "metrics.csv")]
    if early_stopping_patience and monitor:
        callbacks.append(EarlyStopping(monitor, mode="max", patience=early_stopping_patience))
    if os.environ.get(FAULT_ENV):
        callbacks.append(FaultInjection(int(os.environ[FAULT_ENV])))
    return checkpoint, callbacks


def fit_on_all_ranks(trainer: L.Trainer, run: Any, resume_from: Path | None) -> bool:
    """Fit ``run.module`` on ``run.datamodule``; True in the process that evaluates and writes (rank 0)."""
    trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=str(resume_from) if resume_from else None)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Training is over: rank 0 evaluates alone, so metrics must not wait for other ranks.
        torch.distributed.destroy_process_group()
    return trainer.is_global_zero


def prepare_run_dir(run_dir: Path, cfg: Any, *, resume: bool, command: str) -> Path:
    """Refuse to overwrite a run or to resume nothing; write the resolved config. Returns last.ckpt."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        if not last.exists():
            raise RunError(
                f"nothing to resume in {run_dir}: no checkpoints/last.ckpt (the run stopped before its first "
                f"epoch ended); start it again with: patchswap {command} --config {run_dir / 'config.yaml'}"
            )
        load_checkpoint(last)  # fails early and clearly on a truncated file
    elif last.exists():
        raise RunError(
            f"{run_dir} already holds a run; continue it with `patchswap {command} --resume {run_dir}` or "
            "choose another --trainer.run_dir"
        )
    if _launcher_rank() == 0:  # DDP children re-run this command: only the first process writes
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.dump(run_dir / "config.yaml")
    return last


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's start-up notices (GPU available, tips) say nothing the user asked about."""
    names = [
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    ]
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")
        warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
        try:
            yield
        finally:
            for n, lvl in old.items():
                logging.getLogger(n).setLevel(lvl)


def _metrics(results: list[dict[str, float]], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for res in results:
        for k, v in res.items():
            if k.startswith(prefix + "/"):
                out[k.split("/", 1)[1]] = float(v)
    return out


def _launcher_rank() -> int:
    """Global rank as set by Lightning's DDP launcher, torchrun or SLURM (0 before any launch)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def train(cfg: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train, select the best epoch on the validation split, test it once; returns the summary."""
    run_dir = Path(cfg.trainer.run_dir) if cfg.trainer.run_dir else default_run_dir(cfg)
    cfg.trainer.run_dir = str(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last = prepare_run_dir(run_dir, cfg, resume=resume, command="train")
    run = _Run(cfg)
    run.method.prepare_training()
    has_val = run.bundle.val is not None
    checkpoint, callbacks = run_callbacks(
        run_dir, "val/acc" if has_val else None, cfg.trainer.early_stopping_patience
    )
    if not has_val:
        warnings.warn("no validation split (data.val_split=0): the last epoch is taken as best", stacklevel=2)

    with _quiet_lightning():
        if not fit_on_all_ranks(run.trainer(run_dir, callbacks=callbacks), run, last if resume else None):
            return {}
        save_weights(run.model, ckpt_dir / "last.safetensors")
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
        evaluator = run.trainer(None, fit=False)
        val = (
            _metrics(
                evaluator.validate(run.module, datamodule=run.datamodule, ckpt_path=str(best), verbose=False),
                "val",
            )
            if has_val
            else {}
        )
        save_weights(run.model, ckpt_dir / "best.safetensors")
        test = {}
        if run.bundle.test is not None:
            test = _metrics(
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
        "best_checkpoint": str(best),
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


def _locate(target: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint, run_dir) from a run directory or a checkpoint path."""
    p = Path(target)
    if p.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (p / "checkpoints" / name).exists():
                return p / "checkpoints" / name, p
        raise CheckpointError(f"{p} holds no checkpoints/best.ckpt or last.ckpt")
    if not p.exists():
        raise CheckpointError(f"{p} is neither a run directory nor a checkpoint file")
    run_dir = p.parent.parent if p.parent.name == "checkpoints" else None
    return p, run_dir


def _resolve_device(accelerator: str) -> torch.device:
    """The device the evaluation suite runs on, from ``trainer.accelerator`` (auto: GPU when present)."""
    acc = str(accelerator).lower()
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if acc == "mps" or (acc == "auto" and mps is not None and mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")


def _load_model_weights(model: torch.nn.Module, state_dict: dict[str, Any]) -> None:
    """The network's weights from a Lightning checkpoint (``model.`` keys; torch.compile's prefix dropped)."""
    weights = {
        k.removeprefix("model.").replace("_orig_mod.", ""): v
        for k, v in state_dict.items()
        if k.startswith("model.")
    }
    model.load_state_dict(weights)


def evaluate(
    target: str | Path,
    *,
    split: str = "test",
    overrides: dict[str, str] | None = None,
    suite: str | list[str] | tuple[str, ...] | None = None,
    options: Any = None,
    out_dir: str | Path | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on its run's ``val`` or ``test`` split; returns the results as a dict.

    Without ``suite``: accuracy, NLL and ECE (written to ``RUN_DIR/eval-<split>.json``). With ``suite``
    (``"all"`` or some of calibration, fgsm, pgd, corruptions; ``options`` a
    :class:`~patchswap.evaluation.suite.SuiteOptions`): the evaluation suite, written as eval.json,
    eval.md and plots to ``out_dir`` (default: the run directory, or the checkpoint's folder; for the
    val split a subfolder ``eval-val``).
    """
    if split not in ("val", "test"):
        raise ConfigError(f"split must be val or test, got {split!r}")
    ckpt_path, run_dir = _locate(target)
    ckpt = load_checkpoint(ckpt_path)
    if CONFIG_KEY not in ckpt:
        raise CheckpointError(f"{ckpt_path} carries no patchswap config; was it written by patchswap train?")
    cfg = RunConfig()
    apply_mapping(cfg, ckpt[CONFIG_KEY], str(ckpt_path))
    for key, text in (overrides or {}).items():
        cfg.set(key, text, from_text=True)
    cfg.trainer.progress_bar = False
    run = _Run(cfg)
    dataset = run.bundle.val if split == "val" else run.bundle.test
    if dataset is None:
        raise RunError(f"the run's data has no {split} split (data.{split}_split); pass --data.{split}_split")
    if suite:
        return _evaluate_suite(run, ckpt, ckpt_path, run_dir, dataset, split, suite, options, out_dir, log)
    t0 = time.perf_counter()
    with _quiet_lightning():
        evaluator = run.trainer(None, fit=False)
        if split == "val":
            res = _metrics(
                evaluator.validate(
                    run.module, datamodule=run.datamodule, ckpt_path=str(ckpt_path), verbose=False
                ),
                "val",
            )
        else:
            res = _metrics(
                evaluator.test(
                    run.module, datamodule=run.datamodule, ckpt_path=str(ckpt_path), verbose=False
                ),
                "test",
            )
    result = {
        "checkpoint": str(ckpt_path),
        "split": split,
        "images": len(dataset),  # type: ignore[arg-type]
        "seconds": round(time.perf_counter() - t0, 2),
        **res,
    }
    if run_dir is not None:
        (run_dir / f"eval-{split}.json").write_text(json.dumps(result, indent=2))
    return result


def _evaluate_suite(
    run: _Run,
    ckpt: dict[str, Any],
    ckpt_path: Path,
    run_dir: Path | None,
    dataset: Any,
    split: str,
    suite: str | list[str] | tuple[str, ...],
    options: Any,
    out_dir: str | Path | None,
    log: Any,
) -> dict[str, Any]:
    """The evaluation suite on the checkpoint's network and split (see :mod:`patchswap.evaluation.suite`)."""
    from patchswap.evaluation.suite import ImageSource, SuiteOptions, run_suite, write_reports

    cfg, bundle = run.cfg, run.bundle
    options = dataclasses.replace(options or SuiteOptions(), parts=suite)
    if options.batch_size is None:
        options = dataclasses.replace(options, batch_size=cfg.data.eval_batch_size)
    device = _resolve_device(cfg.trainer.accelerator)
    model = run.model
    _load_model_weights(model, ckpt["state_dict"])
    model = model.to(device).eval()
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    source = ImageSource(
        dataset,
        max_images=options.max_images,
        seed=options.seed,
        num_workers=0 if bundle.in_memory else cfg.data.num_workers,
    )
    t0 = time.perf_counter()
    res = run_suite(
        model,
        source,
        mean=bundle.mean,
        std=bundle.std,
        options=options,
        device=device,
        channels_last=cfg.model.channels_last,
        log=log,
    )
    result = {
        "checkpoint": str(ckpt_path),
        "split": split,
        "data": bundle.describe(),
        "model": cfg.model.name,
        "method": cfg.method,
        "device": str(device),
        **res,
        "total_seconds": round(time.perf_counter() - t0, 2),
    }
    where = Path(out_dir) if out_dir is not None else (run_dir if run_dir is not None else ckpt_path.parent)
    if out_dir is None and split == "val":
        where = where / "eval-val"
    title = f"{cfg.method} | {cfg.model.name} | {split}"
    result = write_reports(result, where, title=title)
    result["out_dir"] = str(where)
    return result
