"""Same-class pairing: a seeded, epoch-aware, rank-sharded batch sampler.

Classes are read from a label array (a dataset's ``targets``), never by loading images. Every
batch is laid out ``[anchors..., partners...]`` so ``batch[:n]`` and ``batch[n:]`` are the two
sides of n same-class pairs; a pair is never split across ranks or batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler, Subset

from patchswap.seeding import numpy_rng

__all__ = ["ClassPairBatchSampler", "dataset_labels", "label_array"]

_LABEL_ATTRS = ("targets", "labels", "_labels", "y")
SINGLETON_POLICIES = ("self", "drop")
PARTNER_RULES = ("same_class", "any_class")
MODES = ("partner", "in_batch")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def label_array(labels: Any, name: str = "labels", *, allow_empty: bool = False) -> np.ndarray:
    """``labels`` (tensor on any device, array, list) as a 1-D int64 numpy array of class indices."""
    if isinstance(labels, torch.Tensor):
        arr = labels.detach().cpu().numpy()
    else:
        arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {arr.shape}")
    if arr.size == 0:
        if allow_empty:
            return arr.astype(np.int64)
        raise ValueError(f"{name} is empty: the dataset needs at least one labelled sample")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.equal(np.mod(arr, 1), 0)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.min() < 0:
        bad = int(np.flatnonzero(arr < 0)[0])
        raise ValueError(f"{name} must be non-negative class indices; {name}[{bad}] = {int(arr[bad])}")
    return arr.astype(np.int64, copy=False)


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """The class index of every sample of ``dataset``, found without decoding any image.

    Reads ``targets`` (torchvision, ImageFolder), ``labels`` (SVHN, STL10), ``_labels`` or ``y``;
    follows ``Subset`` and ``ConcatDataset``.
    """
    if isinstance(dataset, Subset) and not any(hasattr(dataset, a) for a in _LABEL_ATTRS):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, ConcatDataset):
        return np.concatenate([dataset_labels(d) for d in dataset.datasets])
    for attr in _LABEL_ATTRS:
        value = getattr(dataset, attr, None)
        if value is not None and not callable(value):
            return label_array(value, f"{type(dataset).__name__}.{attr}")
    raise ValueError(
        f"cannot find the labels of {type(dataset).__name__} without loading its images: give it a "
        "`targets` attribute (a sequence of class indices) or pass labels to ClassPairBatchSampler directly"
    )


def _smallest_group(batch: int, num_classes: int) -> int:
    """The smallest even K dividing ``batch`` into at most ``num_classes`` groups (in_batch mode)."""
    for k in range(2, batch, 2):
        if batch % k == 0 and batch // k <= num_classes:
            return k
    return batch  # the whole batch from one class: always possible


class ClassPairBatchSampler(Sampler[list[int]]):
    """Batches of same-class pairs, laid out ``[anchors..., partners...]``.

    ``mode="partner"``: every (kept) sample is an anchor once per epoch, in a seeded random
    order, and gets a partner drawn uniformly from the other samples of its class
    (``partner="any_class"`` draws from all other samples instead, for ablations).
    ``anchor_fraction`` < 1 keeps a fresh random share of the anchors each epoch (e.g. 0.5 with half
    the pairs per batch: the images of a plain epoch, at a plain epoch's cost).
    ``mode="in_batch"``: each batch holds ``2 * pairs_per_batch / samples_per_class`` classes with
    ``samples_per_class`` (K, even) samples each, paired inside the batch, so no image is loaded
    twice in a batch and each image is used about once per epoch. ``samples_per_class=0`` picks the
    smallest even K that divides the batch into at most as many groups as there are classes.

    A class with a single sample follows ``singleton``: ``"self"`` pairs it with itself (the swap
    is then the identity; a warning names such classes) or ``"drop"`` leaves it out.

    Pairs depend only on ``seed`` and the epoch, not on ``num_replicas``: ranks take every
    ``num_replicas``-th pair (or batch in ``in_batch`` mode), truncated (``drop_last``) or padded by
    wrapping around so every rank runs the same number of batches. Call :meth:`set_epoch` each epoch
    (without it, the epoch advances by itself after each full pass). :meth:`state_dict` records
    the epoch and how many batches were yielded, so a run can resume mid-epoch.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        pairs_per_batch: int,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = True,
        shuffle: bool = True,
        singleton: str = "self",
        partner: str = "same_class",
        mode: str = "partner",
        samples_per_class: int = 2,
        num_samples: int | None = None,
        anchor_fraction: float = 1.0,
    ) -> None:
        self.labels = label_array(labels)
        n = len(self.labels)
        if num_samples is not None and num_samples != n:
            raise ValueError(
                f"labels has {n} entries but the dataset has {num_samples} samples: pass one label per sample"
            )
        if not isinstance(pairs_per_batch, int) or pairs_per_batch < 1:
            raise ValueError(f"pairs_per_batch must be a positive int, got {pairs_per_batch!r}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas=}, {rank=}"
            )
        for value, allowed, arg in (
            (singleton, SINGLETON_POLICIES, "singleton"),
            (partner, PARTNER_RULES, "partner"),
            (mode, MODES, "mode"),
        ):
            if value not in allowed:
                raise ValueError(f"{arg} must be one of {allowed}, got {value!r}")
        if not 0.0 < anchor_fraction <= 1.0:  # False for NaN too
            raise ValueError(f"anchor_fraction must be in (0, 1], got {anchor_fraction!r}")
        if anchor_fraction < 1.0 and mode != "partner":
            raise ValueError("anchor_fraction < 1 needs mode='partner' (in_batch uses every sample once)")
        self.pairs_per_batch = pairs_per_batch
        self.seed, self.num_replicas, self.rank = int(seed), num_replicas, rank
        self.drop_last, self.shuffle = drop_last, shuffle
        self.singleton, self.partner, self.mode = singleton, partner, mode
        self.samples_per_class = samples_per_class
        self.epoch = 0
        self._skip = 0
        self._yielded = 0

        # Group sample indices by class once: order[start[c]:start[c] + count[c]] is class c.
        self.classes, inverse = np.unique(self.labels, return_inverse=True)
        self._cls = inverse.astype(np.int64)
        self._order = np.argsort(self._cls, kind="stable")
        self._count = np.bincount(self._cls, minlength=len(self.classes))
        self._start = np.concatenate([[0], np.cumsum(self._count)[:-1]])
        self._pos = np.empty(n, dtype=np.int64)
        self._pos[self._order] = np.arange(n) - self._start[self._cls[self._order]]

        lonely = self.classes[self._count < 2]
        if len(lonely):
            action = "paired with themselves" if singleton == "self" else "left out"
            warnings.warn(
                f"{len(lonely)} class(es) have a single sample and are {action} "
                f"(singleton={singleton!r}): {lonely[:10].tolist()}",
                stacklevel=2,
            )
        keep_cls = self._count >= 2 if singleton == "drop" else np.ones(len(self.classes), dtype=bool)
        self._eligible = np.flatnonzero(keep_cls[self._cls])
        if len(self._eligible) == 0:
            raise ValueError("no class has two samples, and singleton='drop' leaves nothing to pair")
        self._num_anchors = max(1, int(len(self._eligible) * anchor_fraction))

        if mode == "in_batch":
            self._batch_classes = np.flatnonzero(keep_cls)
            if samples_per_class == 0:
                self.samples_per_class = _smallest_group(2 * pairs_per_batch, len(self._batch_classes))
            k = self.samples_per_class
            if not isinstance(k, int) or k < 2 or k % 2:
                raise ValueError(
                    f"samples_per_class must be an even int >= 2 (or 0: chosen) in in_batch mode, got {k!r}"
                )
            if (2 * pairs_per_batch) % k:
                raise ValueError(
                    f"in in_batch mode 2 * pairs_per_batch ({2 * pairs_per_batch}) must be a multiple of "
                    f"samples_per_class ({k})"
                )
            self._classes_per_batch = 2 * pairs_per_batch // k
            if len(self._batch_classes) < self._classes_per_batch:
                raise ValueError(
                    f"in_batch mode needs {self._classes_per_batch} distinct classes per batch but only "
                    f"{len(self._batch_classes)} are available: lower pairs_per_batch or raise "
                    "samples_per_class"
                )
        self._num_batches = self._count_batches()
        if self._num_batches == 0:
            raise ValueError(
                f"pairs_per_batch={pairs_per_batch} x num_replicas={num_replicas} is larger than the "
                f"{len(self._eligible)} samples available, so drop_last=True leaves no batch: lower "
                "pairs_per_batch or pass drop_last=False"
            )

    @classmethod
    def from_dataset(cls, dataset: Dataset, pairs_per_batch: int, **kwargs: Any) -> ClassPairBatchSampler:
        """Build from a dataset's labels (see :func:`dataset_labels`), checking their count."""
        kwargs.setdefault("num_samples", len(dataset))  # type: ignore[arg-type]
        return cls(dataset_labels(dataset), pairs_per_batch, **kwargs)

    # -- sizes -------------------------------------------------------------------------------
    def _count_batches(self) -> int:
        r = self.num_replicas
        if self.mode == "in_batch":
            total = self._in_batch_total()
            return total // r if self.drop_last else _ceil_div(total, r)
        pairs = self._num_anchors
        if self.drop_last:
            return pairs // (self.pairs_per_batch * r)
        return _ceil_div(_ceil_div(pairs, r), self.pairs_per_batch)

    def __len__(self) -> int:
        return self._num_batches

    # -- epochs and resume -------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose pairs to draw; a resumed mid-epoch offset survives only for its epoch."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches yielded so far in it (a DataLoader that prefetches runs ahead of training:
        an engine that knows its own step count should store that as ``batches_done`` instead)."""
        return {
            "epoch": self.epoch,
            "batches_done": self._yielded,
            "seed": self.seed,
            "num_batches": self._num_batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(
                f"sampler state was saved with seed {state['seed']} but this sampler has {self.seed}"
            )
        saved = state.get("num_batches")
        if saved is not None and saved != self._num_batches:
            raise ValueError(
                f"sampler state was saved for {saved} batches per epoch but this sampler makes "
                f"{self._num_batches}: resume with the same data, pairs_per_batch and devices"
            )
        self.epoch = int(state["epoch"])
        self._skip = int(state.get("batches_done", 0))
        self._yielded = self._skip

    # -- drawing -----------------------------------------------------------------------------
    def _rng(self, epoch: int) -> np.random.Generator:
        return numpy_rng(self.seed, epoch)

    def _partners(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(len(anchors))
        if self.partner == "any_class":
            n = len(self.labels)
            r = np.minimum((u * (n - 1)).astype(np.int64), n - 2) if n > 1 else np.zeros_like(anchors)
            return np.where(n > 1, r + (r >= anchors), anchors)
        cls = self._cls[anchors]
        others = self._count[cls] - 1
        r = np.minimum((u * others).astype(np.int64), np.maximum(others - 1, 0))
        pos = r + (r >= self._pos[anchors])  # skip the anchor itself
        partners = self._order[self._start[cls] + np.minimum(pos, self._count[cls] - 1)]
        return np.where(others > 0, partners, anchors)

    def pairs(self, epoch: int | None = None) -> np.ndarray:
        """All (anchor, partner) pairs of an epoch before sharding, as an ``[M, 2]`` array (partner mode)."""
        if self.mode != "partner":
            raise ValueError("pairs() describes partner mode; in_batch mode pairs are formed per batch")
        rng = self._rng(self.epoch if epoch is None else epoch)
        anchors = rng.permutation(self._eligible) if self.shuffle else self._eligible.copy()
        anchors = anchors[: self._num_anchors]  # all of them unless anchor_fraction < 1
        return np.stack([anchors, self._partners(anchors, rng)], axis=1)

    def _groups_per_class(self) -> np.ndarray:
        """K-sample groups each class yields per epoch (a class smaller than K still yields one)."""
        counts = self._count[self._batch_classes]
        return np.maximum(counts // self.samples_per_class, 1)

    def _in_batch_total(self) -> int:
        return int(self._groups_per_class().sum()) // self._classes_per_batch

    def _in_batch_batches(self, rng: np.random.Generator) -> np.ndarray:
        """Global batches of in_batch mode, ``[B, 2 * pairs_per_batch]``.

        Each class is cut into groups of K from a seeded permutation; a batch takes the P classes
        with the most groups left (ties in a random order), which uses every group once whenever no
        class holds more than an epoch's batches of groups (drawing classes at random instead leaves
        some classes short at the end and repeats others). A class that runs out is cut anew.
        """
        p, k = self._classes_per_batch, self.samples_per_class
        classes = self._batch_classes
        left = self._groups_per_class().astype(np.float64)
        streams: dict[int, np.ndarray] = {}
        out = np.empty((self._in_batch_total(), p * k), dtype=np.int64)
        for b in range(len(out)):
            chosen = np.lexsort((rng.random(len(classes)), -left))[:p]  # most left first, ties at random
            anchors, partners = [], []
            for i in chosen.tolist():
                c = int(classes[i])
                stream = streams.get(c, np.empty(0, dtype=np.int64))
                if len(stream) < k:
                    # A fresh order; a leftover shorter than K is dropped so a group never holds a
                    # sample twice (only a class smaller than K must repeat samples).
                    members = self._order[self._start[c] : self._start[c] + self._count[c]]
                    stream = rng.permutation(members)
                    if len(stream) < k:
                        stream = np.resize(stream, k)
                group, streams[c] = stream[:k], stream[k:]
                left[i] = max(left[i] - 1, 0)
                anchors.append(group[0::2])
                partners.append(group[1::2])
            out[b] = np.concatenate(anchors + partners)
        return out

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        r, n_batches = self.num_replicas, self._num_batches
        if self.mode == "in_batch":
            batches = self._in_batch_batches(self._rng(epoch))
            need = n_batches * r
            if len(batches) < need:  # pad by wrapping so every rank runs the same number of batches
                batches = np.concatenate([batches, batches[: need - len(batches)]])
            mine = batches[:need][self.rank :: r]
            return [row.tolist() for row in mine]
        pairs = self.pairs(epoch)
        if self.drop_last:
            pairs = pairs[: n_batches * self.pairs_per_batch * r]
        else:
            per_rank = _ceil_div(len(pairs), r)
            pad = per_rank * r - len(pairs)
            if pad:
                pairs = np.concatenate([pairs, np.resize(pairs, (pad, 2))])
        mine = pairs[self.rank :: r]
        ppb = self.pairs_per_batch
        return [
            np.concatenate([mine[i : i + ppb, 0], mine[i : i + ppb, 1]]).tolist()
            for i in range(0, len(mine), ppb)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches(self.epoch)
        start, self._skip = self._skip, 0
        self._yielded = start
        for i in range(start, len(batches)):
            self._yielded = i + 1
            yield batches[i]
        self.epoch += 1
        self._yielded = 0
