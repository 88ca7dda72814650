"""Loaders: the plain seeded batch sampler, and the DataModule's train/val/test batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from patchswap import ClassPairBatchSampler
from patchswap.data import build_data
from patchswap.engine.loaders import (
    IndexedDataset,
    PatchswapDataModule,
    SeededFetches,
    ShuffledBatchSampler,
)


def _flat(sampler) -> list[int]:
    return [i for batch in sampler for i in batch]


# -- ShuffledBatchSampler ----------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.integers(0, 5), st.integers(0, 100))
def test_single_rank_without_drop_last_covers_every_index_once(n, batch_size, epoch, seed):
    s = ShuffledBatchSampler(n, batch_size, seed=seed, drop_last=False)
    s.set_epoch(epoch)
    batches = list(s)
    assert len(batches) == len(s) == -(-n // batch_size)
    assert all(len(b) == batch_size for b in batches[:-1]) and 1 <= len(batches[-1]) <= batch_size
    assert sorted(_flat(batches)) == list(range(n))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.integers(0, 100))
def test_drop_last_yields_full_distinct_batches(n, batch_size, seed):
    if n < batch_size:
        return
    s = ShuffledBatchSampler(n, batch_size, seed=seed)
    batches = list(s)
    assert len(batches) == len(s) == n // batch_size
    assert all(len(b) == batch_size for b in batches)
    flat = _flat(batches)
    assert len(set(flat)) == len(flat) and set(flat) <= set(range(n))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 16), st.integers(1, 4), st.booleans(), st.integers(0, 50))
def test_ranks_get_equal_disjoint_shards(n, batch_size, replicas, drop_last, seed):
    if drop_last and n < batch_size * replicas:
        with pytest.raises(ValueError, match="lower data.batch_size"):
            ShuffledBatchSampler(n, batch_size, num_replicas=replicas, drop_last=drop_last)
        return
    shards = [
        list(
            ShuffledBatchSampler(n, batch_size, seed=seed, num_replicas=replicas, rank=r, drop_last=drop_last)
        )
        for r in range(replicas)
    ]
    # Every rank runs the same number of batches of the same sizes (no rank waits at a collective).
    assert len({len(s) for s in shards}) == 1
    assert len({tuple(len(b) for b in s) for s in shards}) == 1
    flats = [_flat(s) for s in shards]
    union = [i for f in flats for i in f]
    if drop_last:
        assert len(set(union)) == len(union)  # no index on two ranks, none twice
        assert all(len(b) == batch_size for s in shards for b in s)
    else:
        assert set(union) == set(range(n))  # everything is seen; padding repeats at most a few
        per_rank = -(-n // replicas)
        assert all(len(f) == per_rank for f in flats)
        assert len(union) - n < replicas


def test_seeded_and_epoch_aware():
    def order(seed: int, epoch: int) -> list[int]:
        s = ShuffledBatchSampler(100, 10, seed=seed)
        s.set_epoch(epoch)
        return _flat(s)

    assert order(0, 0) == order(0, 0)
    assert order(0, 1) == order(0, 1)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    assert sorted(order(3, 2)) == list(range(100))
    # The order depends on (seed, epoch) only: iterating again repeats it.
    s = ShuffledBatchSampler(100, 10, seed=0)
    s.set_epoch(1)
    assert _flat(s) == _flat(s) == order(0, 1)


def test_no_shuffle_keeps_dataset_order():
    s = ShuffledBatchSampler(10, 4, shuffle=False, drop_last=False)
    assert list(s) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    two = [
        list(ShuffledBatchSampler(10, 4, shuffle=False, drop_last=False, num_replicas=2, rank=r))
        for r in (0, 1)
    ]
    assert two == [[[0, 2, 4, 6], [8]], [[1, 3, 5, 7], [9]]]


def test_fewer_samples_than_ranks_still_fills_every_rank():
    """An eval split smaller than the number of devices: every rank still gets a (wrapped) batch."""
    shards = [
        list(ShuffledBatchSampler(2, 4, num_replicas=5, rank=r, drop_last=False, shuffle=False))
        for r in range(5)
    ]
    assert shards == [[[0]], [[1]], [[0]], [[1]], [[0]]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        ShuffledBatchSampler(10, 0)
    with pytest.raises(ValueError, match="larger than the 10 training samples"):
        ShuffledBatchSampler(10, 6, num_replicas=2)


# -- DataModule --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle():
    return build_data("digits", train_subset=200)


def _module(bundle, pairs: bool, **kw) -> PatchswapDataModule:
    return PatchswapDataModule(bundle, batch_size=16, eval_batch_size=64, seed=0, pairs=pairs, **kw)


def test_pair_batches_are_uint8_images_with_matching_halves(bundle):
    dm = _module(bundle, pairs=True)
    loader = dm.train_dataloader()
    assert isinstance(dm.train_sampler, ClassPairBatchSampler)
    batches = list(loader)
    assert len(batches) == len(loader) == 200 // 16
    anchors = []
    for images, labels, index in batches:
        assert images.dtype == torch.uint8 and images.shape == (32, 1, 8, 8)
        assert labels.dtype == torch.long and index.dtype == torch.long
        assert torch.equal(labels[:16], labels[16:])  # same-class pairs, [anchors..., partners...]
        assert not torch.equal(index[:16], index[16:])
        # The batch is exactly those dataset rows.
        ref_images, ref_labels = bundle.train.__getitems__(index.tolist())
        assert torch.equal(images, ref_images) and torch.equal(labels, torch.as_tensor(ref_labels))
        anchors += index[:16].tolist()
    assert len(set(anchors)) == len(anchors) == 192  # each sample is an anchor at most once


def test_plain_batches_and_epochs(bundle):
    dm = _module(bundle, pairs=False)
    loader = dm.train_dataloader()
    assert isinstance(dm.train_sampler, ShuffledBatchSampler)
    first = [b[2] for b in loader]
    assert all(len(i) == 16 for i in first)
    labels = torch.cat([b[1] for b in loader])
    assert torch.equal(labels, torch.as_tensor(np.asarray(bundle.train.targets))[torch.cat(first)])
    dm.train_sampler.set_epoch(1)
    second = [b[2] for b in loader]
    assert sorted(torch.cat(first).tolist()) != torch.cat(first).tolist()  # shuffled
    assert torch.cat(first).tolist() != torch.cat(second).tolist()
    # Another module with the same seed repeats epoch 0 exactly.
    again = [b[2] for b in _module(bundle, pairs=False).train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_sampler_options_reach_the_pair_sampler(bundle):
    dm = _module(bundle, pairs=True, sampler_options={"partner": "any_class"})
    dm.train_dataloader()
    assert dm.train_sampler.partner == "any_class"
    with pytest.raises(ValueError, match="partner"):
        _module(bundle, pairs=True, sampler_options={"partner": "nope"}).train_dataloader()


def test_eval_loaders_cover_their_split_in_order(bundle):
    dm = _module(bundle, pairs=True)
    for loader, split in ((dm.val_dataloader(), bundle.val), (dm.test_dataloader(), bundle.test)):
        index = torch.cat([b[2] for b in loader])
        assert index.tolist() == list(range(len(split)))
        images = torch.cat([b[0] for b in loader])
        assert images.dtype == torch.uint8 and len(images) == len(split)
    no_val = build_data("digits", train_subset=100, val_split=0)
    assert no_val.val is None and _module(no_val, pairs=False).val_dataloader() == []


def test_in_memory_batches_skip_the_dataloader_machinery_and_match_it(bundle):
    """The main-process path (one epoch index tensor) yields what the DataLoader path yields, padding
    of sharded evaluation included, and honours a resumed sampler's skipped batches."""
    from torch.utils.data import DataLoader

    from patchswap.engine.loaders import EvalShardSampler, IndexedDataset, IndexedLoader

    def reference(dataset, sampler):
        loader = DataLoader(IndexedDataset(dataset), batch_sampler=sampler, collate_fn=lambda b: b)
        return list(loader)

    def fast(dataset, sampler):
        loader = IndexedLoader(IndexedDataset(dataset), batch_sampler=sampler, collate_fn=lambda b: b)
        it = iter(loader)
        assert not isinstance(it, torch.utils.data.dataloader._BaseDataLoaderIter)
        return list(it)

    r = next(r for r in range(2, 10) if len(bundle.val) % r)  # the last rank gets padding
    samplers = [
        lambda: ShuffledBatchSampler(len(bundle.train), 16, seed=3),
        lambda: EvalShardSampler(len(bundle.val), 7, num_replicas=r, rank=r - 1),  # padded, ragged
    ]
    for make, split in zip(samplers, (bundle.train, bundle.val), strict=True):
        ref, got = reference(split, make()), fast(split, make())
        assert len(ref) == len(got) > 0
        for a, b in zip(ref, got, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any((b[1] == -100).any() for b in fast(bundle.val, samplers[1]()))  # the padding is labelled
    resumed = ShuffledBatchSampler(len(bundle.train), 16, seed=3)
    resumed.load_state_dict({"epoch": 0, "batches_done": 5, "seed": 3, "num_batches": len(resumed)})
    full = fast(bundle.train, samplers[0]())
    rest = fast(bundle.train, resumed)
    assert len(rest) == len(full) - 5
    assert all(torch.equal(a[2], b[2]) for a, b in zip(full[5:], rest, strict=True))


class _DrawsWhileDecoding(torch.utils.data.Dataset):
    """Each image is a draw from the global generator, as FolderImages' crops and flips are."""

    targets = torch.zeros(12, dtype=torch.long)

    def __len__(self) -> int:
        return 12

    def __getitems__(self, indices):
        return torch.rand(len(indices), 1, 1, 1), self.targets[indices]


def test_seeded_fetches_decode_the_same_batch_alike_whenever_and_wherever_it_is_fetched():
    sampler = ShuffledBatchSampler(12, 4, seed=3)
    seeded, data = SeededFetches(sampler, seed=3), IndexedDataset(_DrawsWhileDecoding())
    assert len(seeded) == 3 and seeded.state_dict() == sampler.state_dict()
    seeded.set_epoch(1)
    assert sampler.epoch == 1
    batches = list(seeded)
    assert [list(b) for b in batches] == list(sampler)  # the same indices, each with its seed
    assert len({b.seed for b in batches}) == 3
    first = [data.__getitems__(b)[0] for b in batches]
    torch.manual_seed(123)  # another process state, and the batches fetched in another order
    again = [data.__getitems__(b)[0] for b in reversed(batches)][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    state = torch.random.get_rng_state()
    data.__getitems__(batches[0])
    assert torch.equal(torch.random.get_rng_state(), state), "the process's own stream moved"
    seeded.set_epoch(2)
    assert {b.seed for b in seeded}.isdisjoint({b.seed for b in batches})  # another epoch, other crops
