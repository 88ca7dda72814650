"""Dense datasets by name: ``register_dense_dataset`` and :func:`build_dense_dataset`.

The same lookup as the classification registry (:class:`~patchswap.data.registry.NameRegistry`):
plain names, aliases, prefix patterns (``coco:DIR``) and did-you-mean errors. The built-in families
(scenes, VOC, COCO; see :mod:`patchswap.dense.datasets`) register themselves on the first lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..data.registry import DatasetEntry, NameRegistry
from .base import SPLITS, DenseDataset, check_task

__all__ = [
    "DenseDatasetEntry",
    "DenseRequest",
    "available_dense_datasets",
    "build_dense_dataset",
    "dense_dataset_entry",
    "register_dense_dataset",
]


@dataclass(frozen=True)
class DenseRequest:
    """What a dense loader gets: the registered ``name``, the ``argument`` after its prefix, and the
    :func:`build_dense_dataset` options (``scene_count``, ``canvas`` and ``seed`` concern scenes)."""

    name: str
    task: str
    split: str
    argument: str = ""
    data_dir: str = "../shared/data"
    download: bool = False
    scene_count: int | None = None
    canvas: int = 64
    seed: int = 0


@dataclass(frozen=True)
class DenseDatasetEntry(DatasetEntry):
    """A registered dense dataset. ``held_out``: the official split that plays the test set when the
    dataset has no separate validation split (VOC), so the trainer carves val out of train instead."""

    held_out: str | None = None


DENSE_DATASETS: NameRegistry[DenseDatasetEntry] = NameRegistry(
    "dense dataset", builtins="patchswap.dense.datasets"
)


def register_dense_dataset(
    name: str,
    loader: Callable[[DenseRequest], DenseDataset] | None = None,
    *,
    held_out: str | None = None,
    **fields: Any,
) -> Any:
    """Register a dense dataset so ``build_dense_dataset(name, task, split)`` loads it (or decorate).

    ``loader(request: DenseRequest)`` returns the :class:`~patchswap.dense.base.DenseDataset` for
    ``request.task`` and ``request.split``. ``fields`` are those of
    :func:`~patchswap.data.registry.register_dataset` (``aliases``, ``prefix``, ``pattern``, ``summary``,
    ``replace``): ``prefix="name:"`` passes the rest of the name on as ``request.argument``.
    """
    if held_out is not None and held_out not in SPLITS:
        raise ValueError(f"held_out must be one of {SPLITS} or None, got {held_out!r}")
    return DENSE_DATASETS.register(DenseDatasetEntry, name, loader, held_out=held_out, **fields)


def available_dense_datasets() -> list[str]:
    """Names :func:`build_dense_dataset` accepts: plain names, then patterns (``coco:DIR``)."""
    return DENSE_DATASETS.labels()


def dense_dataset_entry(name: str) -> DenseDatasetEntry:
    """The entry a dense dataset name (``voc2007``, ``coco:DIR``) selects; ValueError if none."""
    return DENSE_DATASETS.resolve(name)[0]


def build_dense_dataset(name: str, task: str, split: str, **options: Any) -> DenseDataset:
    """The ``split`` ("train", "val" or "test") of a named dense dataset for ``task``.

    ``options`` are the other fields of :class:`DenseRequest`, with its defaults: ``data_dir``,
    ``download``, ``scene_count``, ``canvas`` and ``seed``. ``seed`` only lays out scenes: keep it fixed
    across training seeds so every run sees identical data. Scenes: train/val from disjoint MNIST training
    digits, test from MNIST test digits; ``scene_count`` overrides the default sizes (train 4000, val 1000,
    test 1000). VOC2012 has no public test split.
    """
    check_task(task)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    entry, argument = DENSE_DATASETS.resolve(name)
    return entry.loader(DenseRequest(name=entry.name, task=task, split=split, argument=argument, **options))
