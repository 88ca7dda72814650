"""The data side of ``patchswap transfer``: the splits of a dense dataset, crops, padding, loaders."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from patchswap.dense.datasets import DenseDataset, build_dense_dataset, collate_dense, dense_dataset_entry
from patchswap.dense.methods import dense_method_class
from patchswap.engine.dense_module import IGNORE_INDEX
from patchswap.engine.harness import RunError
from patchswap.engine.loaders import ShuffledBatchSampler
from patchswap.engine.transfer_config import TransferConfig
from patchswap.sampling import ClassPairBatchSampler

__all__ = ["DenseDataModule", "dense_datasets", "dense_image_size", "normalisation"]


MNIST_STATS = ((0.1307,), (0.3081,))


IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


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


def dense_datasets(cfg: TransferConfig) -> dict[str, Any]:
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


def normalisation(cfg: TransferConfig, in_chans: int) -> tuple[list[float], list[float]]:
    if cfg.data.mean is not None and cfg.data.std is not None:
        mean, std = list(cfg.data.mean), list(cfg.data.std)
    else:
        base = MNIST_STATS if cfg.data.name == "scenes" else IMAGENET_STATS
        mean = [base[0][i % len(base[0])] for i in range(in_chans)]
        std = [base[1][i % len(base[1])] for i in range(in_chans)]
    if len(mean) != in_chans or len(std) != in_chans:
        raise RunError(f"data.mean and data.std need {in_chans} values (one per image channel)")
    return mean, std


def dense_image_size(cfg: TransferConfig) -> int:
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
