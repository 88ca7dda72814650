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
import numpy as np
import torch
from torch.utils.data import DataLoader

from patchswap.dense.datasets import DenseDataset, build_dense_dataset, collate_dense, dense_dataset_entry
from patchswap.dense.methods import dense_method_class
from patchswap.dense.models import build_dense_model
from patchswap.engine.callbacks import read_metrics, training_time
from patchswap.engine.config import apply_mapping, load_config
from patchswap.engine.dense_module import IGNORE_INDEX, DenseModule, score_key
from patchswap.engine.loaders import ShuffledBatchSampler
from patchswap.engine.run import (
    RunError,
    _quiet_lightning,
    fit_on_all_ranks,
    lightning_trainer,
    prepare_run_dir,
    run_callbacks,
)
from patchswap.engine.transfer_config import TransferConfig, method_options
from patchswap.evaluation.plots import plot_training_curves
from patchswap.runs import BACKBONE_KEY, CheckpointError, load_checkpoint, run_relative, save_weights
from patchswap.runs import TRANSFER_CONFIG_KEY as CONFIG_KEY
from patchswap.sampling import ClassPairBatchSampler

__all__ = [
    "default_transfer_dir",
    "evaluate_transfer",
    "load_transfer_config",
    "resume_transfer",
    "train_transfer",
]

MNIST_STATS = ((0.1307,), (0.3081,))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


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


class _DenseSubset(torch.utils.data.Dataset):
    """Some images of a dense dataset, keeping what the engine reads (classes, channels, pair labels)."""

    def __init__(self, base: DenseDataset, indices: np.ndarray) -> None:
        self.base, self.indices = base, np.asarray(indices)
        self.task, self.classes, self.in_chans = base.task, base.classes, base.in_chans

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.base[int(self.indices[i])]

    def pair_labels(self) -> np.ndarray:
        return np.asarray(self.base.pair_labels())[self.indices]


def _datasets(cfg: TransferConfig) -> dict[str, Any]:
    """train / val / test. VOC: val is carved (seeded) out of VOC train, and the official held-out set
    (2012 val, 2007 test) is the test split, so no choice is ever made on the reported numbers."""
    d = cfg.data

    def build(split: str, count: int | None = None) -> DenseDataset:
        return build_dense_dataset(
            d.name,
            cfg.task,
            split,
            data_dir=d.data_dir,
            download=d.download,
            scene_count=count,
            canvas=d.canvas,
            seed=d.scene_seed,
        )

    held_out = dense_dataset_entry(d.name).held_out
    if held_out is None:
        return {
            "train": build("train", d.train_count),
            "val": build("val", d.val_count),
            "test": build("test", d.test_count),
        }
    full = build("train")
    n_val = d.val_count or min(500, len(full) // 10)
    order = np.random.default_rng(d.scene_seed).permutation(len(full))
    train_idx = order[n_val:] if d.train_count is None else order[n_val : n_val + d.train_count]
    return {
        "train": _DenseSubset(full, np.sort(train_idx)),
        "val": _DenseSubset(full, np.sort(order[:n_val])),
        "test": build(held_out, d.test_count),
    }


def _stats(cfg: TransferConfig, in_chans: int) -> tuple[list[float], list[float]]:
    if cfg.data.mean is not None and cfg.data.std is not None:
        mean, std = list(cfg.data.mean), list(cfg.data.std)
    else:
        base = MNIST_STATS if cfg.data.name == "scenes" else IMAGENET_STATS
        mean = [base[0][i % len(base[0])] for i in range(in_chans)]
        std = [base[1][i % len(base[1])] for i in range(in_chans)]
    if len(mean) != in_chans or len(std) != in_chans:
        raise RunError(f"data.mean and data.std need {in_chans} values (one per image channel)")
    return mean, std


def _image_size(cfg: TransferConfig) -> int:
    """Detector resize target: the canvas for scenes, data.crop_size otherwise."""
    return cfg.data.canvas if cfg.data.name == "scenes" else cfg.data.crop_size


class _SegmentCrop:
    """Training collate for segmentation: pad (image 0, mask ignore) and random-crop to one size.

    Images no larger than ``size`` that already share one size (scenes) pass through unchanged.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.collate = collate_dense("segment")

    def __call__(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
        shapes = {tuple(im.shape[-2:]) for im, _ in items}
        if len(shapes) > 1 or max(max(s) for s in shapes) > self.size:
            items = [self._crop(im, mask) for im, mask in items]
        return self.collate(items)

    def _crop(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = image.shape[-2:]
        ph, pw = max(0, self.size - h), max(0, self.size - w)
        if ph or pw:
            image = torch.nn.functional.pad(image, (0, pw, 0, ph), value=0)
            mask = torch.nn.functional.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
        h, w = image.shape[-2:]
        top = int(torch.randint(0, h - self.size + 1, ()).item())
        left = int(torch.randint(0, w - self.size + 1, ()).item())
        return image[..., top : top + self.size, left : left + self.size], mask[
            top : top + self.size, left : left + self.size
        ]


def _pad_segment_batch(items: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """Evaluation collate for segmentation: pad to the largest image of the batch; padding is ignored."""
    h = max(im.shape[-2] for im, _ in items)
    w = max(im.shape[-1] for im, _ in items)
    out = []
    for im, mask in items:
        ph, pw = h - im.shape[-2], w - im.shape[-1]
        if ph or pw:
            im = torch.nn.functional.pad(im, (0, pw, 0, ph), value=0)
            mask = torch.nn.functional.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
        out.append((im, mask))
    return collate_dense("segment")(out)


def _with_index(collate: Any) -> Any:
    def wrapped(items: list[Any]) -> Any:
        images, targets = collate(items)
        return images, targets, None

    return wrapped


class DenseDataModule(L.LightningDataModule):
    """Loaders of a transfer run: seeded shuffled batches (ce) or same-class pairs (ips)."""

    def __init__(self, cfg: TransferConfig, datasets: dict[str, DenseDataset]) -> None:
        super().__init__()
        self.cfg, self.datasets = cfg, datasets
        self.train_sampler: ClassPairBatchSampler | ShuffledBatchSampler | None = None

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)

    def train_dataloader(self) -> DataLoader:
        cfg, train = self.cfg, self.datasets["train"]
        replicas, rank = self._replicas()
        if dense_method_class(cfg.method).needs_pairs:
            self.train_sampler = ClassPairBatchSampler(
                train.pair_labels(),
                cfg.data.batch_size,
                seed=cfg.trainer.seed,
                num_replicas=replicas,
                rank=rank,
                num_samples=len(train),
            )
        else:
            self.train_sampler = ShuffledBatchSampler(
                len(train), cfg.data.batch_size, seed=cfg.trainer.seed, num_replicas=replicas, rank=rank
            )
        collate = _SegmentCrop(cfg.data.crop_size) if cfg.task == "segment" else collate_dense("detect")
        return DataLoader(
            train,
            batch_sampler=self.train_sampler,
            collate_fn=_with_index(collate),
            num_workers=cfg.data.num_workers,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        collate = _pad_segment_batch if self.cfg.task == "segment" else collate_dense("detect")
        return DataLoader(
            self.datasets[split],
            batch_size=self.cfg.data.eval_batch_size,
            shuffle=False,
            collate_fn=_with_index(collate),
            num_workers=self.cfg.data.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


class _TransferRun:
    """Data, model and module of one transfer run, built from its config."""

    def __init__(self, cfg: TransferConfig) -> None:
        self.cfg = cfg
        L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
        self.datasets = _datasets(cfg)
        train = self.datasets["train"]
        self.mean, self.std = _stats(cfg, train.in_chans)
        self.model, self.backbone_source, self.backbone_name = build_dense_model(
            cfg.task,
            cfg.model.arch,
            len(train.classes),
            cfg.model.backbone,
            in_chans=train.in_chans,
            image_size=_image_size(cfg),
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
        checkpoint[CONFIG_KEY] = self.cfg.to_dict()
        checkpoint[BACKBONE_KEY] = self.backbone_name

    def trainer(self, run_dir: Path | None, *, callbacks: list | None = None, fit: bool = True) -> L.Trainer:
        return lightning_trainer(self.cfg.trainer, run_dir, callbacks=callbacks, fit=fit)


def train_transfer(cfg: TransferConfig, *, resume: bool = False) -> dict[str, Any]:
    """Fine-tune, select the best epoch on val (mIoU or mAP), test it once; returns the summary."""
    run_dir = Path(cfg.trainer.run_dir) if cfg.trainer.run_dir else default_transfer_dir(cfg)
    cfg.trainer.run_dir = str(run_dir)
    last = prepare_run_dir(run_dir, cfg, resume=resume, command="transfer")
    run = _TransferRun(cfg)
    monitor = score_key(cfg.task)
    checkpoint, callbacks = run_callbacks(run_dir, monitor, cfg.trainer.early_stopping_patience)
    with _quiet_lightning():
        if not fit_on_all_ranks(run.trainer(run_dir, callbacks=callbacks), run, last if resume else None):
            return {}
        save_weights(run.model, run_dir / "checkpoints" / "last.safetensors")
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
        evaluator = run.trainer(None, fit=False)
        evaluator.validate(run.module, datamodule=run.datamodule, ckpt_path=str(best), verbose=False)
        save_weights(run.model, run_dir / "checkpoints" / "best.safetensors")
        evaluator.test(run.module, datamodule=run.datamodule, ckpt_path=str(best), verbose=False)
    rows = read_metrics(run_dir / "metrics.csv")
    seconds, images = training_time(rows)
    summary = {
        "run_dir": str(run_dir),
        "task": cfg.task,
        "method": cfg.method,
        "arch": cfg.model.arch,
        "backbone": run.backbone_source,
        "data": cfg.data.name,
        "train_images": len(run.datasets["train"]),
        "seed": cfg.trainer.seed,
        "epochs_run": len(rows),
        "best_epoch": int(load_checkpoint(best)["epoch"]) + 1 if best.exists() else None,
        "selected_on": monitor,
        "val": run.module.results.get("val", {}),
        "test": run.module.results.get("test", {}),
        "train_seconds": round(seconds, 2),
        "train_images_per_s": round(images / seconds, 1) if seconds else None,
        "images_seen": int(round(images)),
        "best_checkpoint": run_relative(best, run_dir),  # relative: the run dir may be moved or committed
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
    cfg = load_transfer_config([run_dir / "config.yaml"], overrides)
    cfg.trainer.run_dir = str(run_dir)
    return train_transfer(cfg, resume=True)


def evaluate_transfer(target: str | Path, *, split: str = "test") -> dict[str, Any]:
    """mIoU / mAP (with per-class values) of a transfer checkpoint or run directory on val or test."""
    p = Path(target)
    ckpt_path = p / "checkpoints" / "best.ckpt" if p.is_dir() else p
    if not ckpt_path.exists():
        raise CheckpointError(f"{ckpt_path} does not exist: pass a transfer run directory or its checkpoint")
    ckpt = load_checkpoint(ckpt_path)
    if CONFIG_KEY not in ckpt:
        raise CheckpointError(
            f"{ckpt_path} carries no transfer config; was it written by patchswap transfer?"
        )
    cfg = TransferConfig()
    apply_mapping(cfg, ckpt[CONFIG_KEY], str(ckpt_path))
    cfg.trainer.progress_bar = False
    if ckpt.get(BACKBONE_KEY):  # the architecture alone: the checkpoint's weights replace the backbone's
        cfg.model.backbone = str(ckpt[BACKBONE_KEY])
    run = _TransferRun(cfg)
    with _quiet_lightning():
        evaluator = run.trainer(None, fit=False)
        if split == "val":
            evaluator.validate(run.module, datamodule=run.datamodule, ckpt_path=str(ckpt_path), verbose=False)
        else:
            evaluator.test(run.module, datamodule=run.datamodule, ckpt_path=str(ckpt_path), verbose=False)
    return {"checkpoint": str(ckpt_path), "split": split, **run.module.results[split]}
