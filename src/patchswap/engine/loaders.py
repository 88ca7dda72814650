"""DataLoaders for a run: seeded batch samplers (plain or same-class pairs) over a DataBundle.

Every training batch comes from a batch sampler seeded by (seed, epoch) and sharded by rank, so
Lightning never swaps in a sampler of its own (``use_distributed_sampler=False``) and one seed fixes
the data order. In-memory tensor datasets are indexed a whole batch at a time in the main process
(:class:`IndexedLoader`: one index tensor per epoch on the data's device, no DataLoader iterator or
collate per batch); other datasets go through the DataLoader (``__getitems__`` where they have it),
each training batch fetched under a seed of its own (:class:`SeededFetches`), so the random crops and
flips drawn while decoding do not depend on which worker fetched the batch, or when.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from patchswap.data import DataBundle, TensorImageDataset
from patchswap.sampling import ClassPairBatchSampler, dataset_labels
from patchswap.seeding import derive_seed, numpy_rng, step_seed

__all__ = [
    "IGNORE_LABEL",
    "EvalShardSampler",
    "IndexedDataset",
    "IndexedLoader",
    "PatchswapDataModule",
    "ResumableLoader",
    "SeededFetches",
    "ShuffledBatchSampler",
]


class ShuffledBatchSampler(Sampler[list[int]]):
    """Seeded, epoch-aware, rank-sharded shuffled batches (the plain counterpart of ClassPairBatchSampler)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = True,
        shuffle: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if drop_last and num_samples < batch_size * num_replicas:
            raise ValueError(
                f"batch_size={batch_size} x devices={num_replicas} is larger than the {num_samples} training "
                "samples: lower data.batch_size"
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.drop_last, self.shuffle = drop_last, shuffle
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order; a resumed mid-epoch offset survives only for its own epoch."""
        if int(epoch) != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches done in it (the engine stores its own step count: a loader prefetches)."""
        return {"epoch": self.epoch, "batches_done": self._skip, "seed": self.seed, "num_batches": len(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_sampler_state(state, self.seed, len(self))
        self.epoch, self._skip = int(state["epoch"]), int(state.get("batches_done", 0))

    def __len__(self) -> int:
        per_rank = (
            self.num_samples // self.num_replicas
            if self.drop_last
            else -(-self.num_samples // self.num_replicas)
        )
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = numpy_rng(self.seed, self.epoch)
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        r = self.num_replicas
        if self.drop_last:
            order = order[: len(self) * self.batch_size * r]
        else:
            pad = -(-len(order) // r) * r - len(order)
            # np.resize wraps around as often as needed: fewer samples than ranks still fills every rank.
            order = np.concatenate([order, np.resize(order, pad)])
        mine = order[self.rank :: r]
        start, self._skip = self._skip, 0
        for i in range(start, len(self)):
            yield mine[i * self.batch_size : (i + 1) * self.batch_size].tolist()


def _check_sampler_state(state: dict[str, Any], seed: int, num_batches: int) -> None:
    if int(state.get("seed", seed)) != seed:
        raise ValueError(f"sampler state was saved with seed {state['seed']} but this sampler has {seed}")
    saved = state.get("num_batches")
    if saved is not None and int(saved) != num_batches:
        raise ValueError(
            f"the checkpoint was written mid-epoch with {saved} batches per epoch, but this run makes "
            f"{num_batches}: resume it with the same data, batch size and devices (or from an epoch-end "
            "checkpoint)"
        )


def _epoch_index(batches: list[list[int]], device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """An epoch's batches as one flat index tensor on ``device`` and the batch boundaries.

    Made once per epoch, so a device-resident dataset is indexed without a host-to-device copy per
    batch; on CUDA the copy goes through pinned memory and does not wait for the queued work.
    """
    sizes = [len(b) for b in batches]
    flat = torch.from_numpy(np.fromiter((i for b in batches for i in b), dtype=np.int64, count=sum(sizes)))
    if device.type != "cpu":
        if device.type == "cuda":
            flat = flat.pin_memory()
        flat = flat.to(device, non_blocking=True)
    bounds = [0]
    for n in sizes:
        bounds.append(bounds[-1] + n)
    return flat, bounds


class IndexedLoader(DataLoader):
    """A DataLoader over an :class:`IndexedDataset` that indexes in-memory tensors in the main process.

    For a :class:`TensorImageDataset` without workers, iterating skips the DataLoader's iterator, fetch
    and collate machinery: the epoch's batches are drawn from the batch sampler (lazily, at the first
    batch, as the DataLoader would), turned into one index tensor on the data's device, and each batch
    is ``(images[idx], labels[idx], idx)``, what ``IndexedDataset.__getitems__`` returns, with
    ``idx`` already on the data's device. Other datasets go through the DataLoader unchanged.
    """

    def __iter__(self) -> Iterator[Any]:
        data = getattr(self.dataset, "dataset", None)
        if self.num_workers == 0 and isinstance(data, TensorImageDataset):
            return self._indexed(data)
        return super().__iter__()

    def _indexed(self, data: TensorImageDataset) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        batches = list(self.batch_sampler)  # type: ignore[arg-type]
        if not batches:
            return
        images, targets = data.images, data.targets
        flat, bounds = _epoch_index(batches, images.device)
        labels: torch.Tensor | None = None
        if bool((flat < 0).any()):  # padding ~i (EvalShardSampler): sample i, label IGNORE_LABEL
            pad = flat < 0
            flat = torch.where(pad, ~flat, flat)
            labels = torch.where(pad, IGNORE_LABEL, targets[flat])
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            idx = flat[start:end]
            yield images[idx], (targets[idx] if labels is None else labels[start:end]), idx


class ResumableLoader(IndexedLoader):
    """The training DataLoader, made resumable mid-epoch (Lightning's ``Stateful`` protocol).

    Lightning stores :meth:`state_dict` in every checkpoint and, when it restarts inside an epoch,
    hands it back to :meth:`load_state_dict` before making the iterator, so the batch sampler skips
    the batches already trained on. The position comes from ``position()`` -- ``(epoch, batches
    done)`` as the trainer counts them -- not from the sampler, which runs ahead of training by the
    batches the loader prefetches.
    """

    def __init__(self, *args: Any, position: Callable[[], tuple[int, int]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._position = position

    def state_dict(self) -> dict[str, Any]:
        state = dict(self.batch_sampler.state_dict())  # type: ignore[union-attr]
        if self._position is not None:
            state["epoch"], state["batches_done"] = self._position()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_sampler_position(self.batch_sampler, state)


def load_sampler_position(sampler: Any, state: dict[str, Any]) -> None:
    """Put a batch sampler at a saved (epoch, batches done); a finished epoch means the next one."""
    state = dict(state)
    if int(state.get("batches_done", 0)) >= len(sampler):
        state["epoch"], state["batches_done"] = int(state["epoch"]) + 1, 0
    sampler.load_state_dict(state)


IGNORE_LABEL = -100  # label of padding samples: metrics skip it (torchmetrics ignore_index)


class EvalShardSampler(Sampler[list[int]]):
    """In-order evaluation batches sharded across ranks; the padding that gives every rank the same
    number of batches is encoded as negative indices, so metrics can ignore it and a distributed
    evaluation counts every image exactly once."""

    def __init__(self, num_samples: int, batch_size: int, *, num_replicas: int = 1, rank: int = 0) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.num_replicas, self.rank = num_replicas, rank
        self.per_rank = -(-num_samples // num_replicas)

    def __len__(self) -> int:
        return -(-self.per_rank // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = np.arange(self.per_rank * self.num_replicas)
        order = np.where(order < self.num_samples, order, ~(order % max(self.num_samples, 1)))
        mine = order[self.rank :: self.num_replicas]
        for i in range(len(self)):
            yield mine[i * self.batch_size : (i + 1) * self.batch_size].tolist()


_FETCH_STREAM = 0x46455443  # the key of the batch-fetch seeds among a run's streams ("FETC")


class KeyedBatch(list):
    """A training batch's dataset indices and the seed its images' random transforms draw from."""

    seed: int


class SeededFetches(Sampler[list[int]]):
    """A batch sampler whose batches carry a seed from (run seed, epoch, the batch's indices).

    A dataset that draws random transforms while it decodes (:class:`~patchswap.data.FolderImages`:
    RandomResizedCrop, flip) draws them from the global generator of the process that fetches the batch.
    Worker processes, their seeds and prefetching differ between a fresh and a resumed run;
    :class:`IndexedDataset` therefore fetches a :class:`KeyedBatch` under its seed, so every image gets
    the same crop at the same step of the same epoch, whatever fetched it. Everything else (length,
    epoch, state for resuming) is the wrapped sampler's.
    """

    def __init__(self, batch_sampler: Any, seed: int) -> None:
        self.batch_sampler, self.seed = batch_sampler, int(seed)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[KeyedBatch]:
        base = derive_seed(self.seed, int(getattr(self.batch_sampler, "epoch", 0)), _FETCH_STREAM)
        for indices in self.batch_sampler:
            batch = KeyedBatch(indices)
            batch.seed = step_seed(base, zlib.crc32(np.asarray(indices, dtype=np.int64).tobytes()))
            yield batch

    def __getattr__(self, name: str) -> Any:  # set_epoch, epoch, state_dict, load_state_dict, ...
        if name == "batch_sampler":
            raise AttributeError(name)
        return getattr(self.batch_sampler, name)


class IndexedDataset(Dataset):
    """Wraps a dataset so each batch also carries the dataset indices (for per-sample method state)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.targets = dataset_labels(dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seed = getattr(indices, "seed", None)
        if seed is None:
            return self._fetch(indices)
        with torch.random.fork_rng(devices=[]):  # the process's own stream continues untouched after
            torch.default_generator.manual_seed(seed)
            return self._fetch(indices)

    def _fetch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # A negative index ~i is padding that evens out ranks (see EvalShardSampler): sample i, label IGNORE.
        idx = torch.as_tensor(indices, dtype=torch.long)
        pad = idx < 0
        real = torch.where(pad, ~idx, idx).tolist()
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None:
            images, labels = getitems(real)
        else:
            items = [self.dataset[i] for i in real]
            images = torch.stack([torch.as_tensor(x) for x, _ in items])
            labels = torch.as_tensor([int(y) for _, y in items])
        labels = torch.as_tensor(labels, dtype=torch.long)
        if pad.any():
            labels = torch.where(pad.to(labels.device), IGNORE_LABEL, labels)
        return images, labels, torch.as_tensor(real, dtype=torch.long)

    def __getitem__(self, index: int) -> Any:  # pragma: no cover - DataLoader uses __getitems__
        return self.__getitems__([index])


def _already_batched(batch: Any) -> Any:
    """IndexedDataset returns finished ``(images, labels, indices)`` batches: nothing to collate."""
    return batch


class PatchswapDataModule(L.LightningDataModule):
    """Train/val/test loaders of a :class:`DataBundle` for one method and seed."""

    def __init__(
        self,
        bundle: DataBundle,
        *,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        pairs: bool,
        sampler_options: dict[str, Any] | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.bundle = bundle
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.pairs = seed, pairs
        self.sampler_options = sampler_options or {}
        self.num_workers = 0 if bundle.in_memory else num_workers
        self.train_sampler: ClassPairBatchSampler | ShuffledBatchSampler | None = None
        self._saved_position: dict[str, Any] | None = None

    # Lightning restores a datamodule's state before it asks for the training loader (which it does
    # early, to count the steps of the lr schedule), so the sampler is made at the saved position.
    # The loader's own Stateful state is loaded by Lightning only when the loader is made later.
    def state_dict(self) -> dict[str, Any]:
        if self.train_sampler is None or getattr(self, "trainer", None) is None:
            return {}
        state = dict(self.train_sampler.state_dict())
        state["epoch"], state["batches_done"] = self._position()
        return {"train_sampler": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved_position = state_dict.get("train_sampler")

    def setup(self, stage: str) -> None:
        """On an accelerator, in-memory datasets move there once: batches are then indexed on the device."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or not self.bundle.in_memory:
            return
        device = trainer.strategy.root_device
        if device.type == "cpu":
            return
        for split in ("train", "val", "test"):
            ds = getattr(self.bundle, split)
            if isinstance(ds, TensorImageDataset) and ds.device != device:
                setattr(self.bundle, split, ds.to(device))

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def make_train_sampler(self) -> ClassPairBatchSampler | ShuffledBatchSampler:
        replicas, rank = self._replicas()
        train = self.bundle.train
        n = len(train)  # type: ignore[arg-type]
        if n < self.batch_size * replicas:  # said with the config keys, not the samplers' arguments
            devices = f" x {replicas} devices" if replicas > 1 else ""
            most = n // replicas
            if self.pairs and "pairs_per_batch" in self.sampler_options:
                # pairs formed inside the batch: groups of K images of a class (K even, 2 at least)
                step = max(2, int(self.sampler_options.get("samples_per_class") or 2))
                most -= most % step
            fix = (
                f"lower data.batch_size to at most {most}"
                if most > 0
                else "use more training images (data.train_subset, the val/test splits) or fewer devices"
            )
            raise ValueError(
                f"data.batch_size={self.batch_size}{devices} is larger than the {n} training images "
                f"(what is left after the val/test splits and data.train_subset): {fix}"
            )
        if self.pairs:
            return ClassPairBatchSampler(
                dataset_labels(train),
                **{"pairs_per_batch": self.batch_size, **self.sampler_options},
                seed=self.seed,
                num_replicas=replicas,
                rank=rank,
                num_samples=len(train),  # type: ignore[arg-type]
            )
        return ShuffledBatchSampler(
            len(train),  # type: ignore[arg-type]
            self.batch_size,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
        )

    def _position(self) -> tuple[int, int]:
        """(epoch, batches trained on in it), as the trainer counts them (for ResumableLoader)."""
        trainer: Any = self.trainer
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _loader(self, dataset: Dataset, batch_sampler: Sampler, *, train: bool = False) -> DataLoader:
        workers = self.num_workers
        extra: dict[str, Any] = {"position": self._position} if train else {}
        return (ResumableLoader if train else IndexedLoader)(
            IndexedDataset(dataset),
            batch_sampler=batch_sampler,
            collate_fn=_already_batched,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available() and not self.bundle.in_memory,
            **extra,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_sampler is None:
            self.train_sampler = self.make_train_sampler()
        if self._saved_position is not None:
            load_sampler_position(self.train_sampler, self._saved_position)
            self._saved_position = None
        batches: Any = self.train_sampler
        if not self.bundle.in_memory:  # decoded with random transforms: seeded per batch
            batches = SeededFetches(batches, self.seed)
        return self._loader(self.bundle.train, batches, train=True)

    def _eval_loader(self, dataset: Dataset | None) -> DataLoader | list:
        if dataset is None:
            return []
        replicas, rank = self._replicas()
        sampler = EvalShardSampler(len(dataset), self.eval_batch_size, num_replicas=replicas, rank=rank)  # type: ignore[arg-type]
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self.bundle.val)

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self.bundle.test)
