"""ClassPairBatchSampler: pairing, epochs, sharding, resume and bad input."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

from patchswap import ClassPairBatchSampler, dataset_labels


def _labels(n=103, classes=7, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n)


def _split(batch):
    n = len(batch) // 2
    return batch[:n], batch[n:]


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 200), st.integers(1, 12), st.integers(1, 9), st.integers(0, 1000))
def test_each_sample_is_an_anchor_once_and_partners_share_its_class(n, classes, ppb, seed):
    labels = _labels(n, classes, seed)
    if ppb > n:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = ClassPairBatchSampler(labels, ppb, seed=seed, drop_last=False)
    anchors, partners = [], []
    for batch in s:
        a, p = _split(batch)
        assert len(a) == len(p) <= ppb
        anchors += a
        partners += p
    assert sorted(anchors) == list(range(n))
    anchors, partners = np.array(anchors), np.array(partners)
    assert np.all(labels[anchors] == labels[partners])
    counts = np.bincount(labels, minlength=classes)
    multi = counts[labels[anchors]] >= 2
    assert np.all(anchors[multi] != partners[multi]), (
        "a class with 2+ samples never pairs a sample with itself"
    )
    assert np.all(anchors[~multi] == partners[~multi])


def test_partners_are_uniform_over_the_other_class_members():
    labels = np.array([0] * 5 + [1] * 3)
    s = ClassPairBatchSampler(labels, 8, seed=0)
    hits = np.zeros((8, 8))
    for epoch in range(3000):
        for a, p in s.pairs(epoch):
            hits[a, p] += 1
    row = hits[0, 1:5] / hits[0].sum()
    assert np.allclose(row, 0.25, atol=0.03) and hits[0, 0] == 0 and hits[0, 5:].sum() == 0


def test_seeded_and_epoch_aware():
    labels = _labels()
    a = ClassPairBatchSampler(labels, 8, seed=1)
    b = ClassPairBatchSampler(labels, 8, seed=1)
    c = ClassPairBatchSampler(labels, 8, seed=2)
    assert list(a) == list(b)
    a.set_epoch(0)
    c.set_epoch(0)
    assert list(a) != list(c)
    a.set_epoch(0)
    e0 = list(a)
    a.set_epoch(1)
    assert list(a) != e0
    a.set_epoch(0)
    assert list(a) == e0


def test_epoch_advances_by_itself_after_a_full_pass():
    s = ClassPairBatchSampler(_labels(), 8, seed=0)
    first, second = list(s), list(s)
    assert first != second
    s.set_epoch(1)
    assert list(s) == second


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_shards_cover_the_single_process_pairs_with_equal_batch_counts(drop_last, replicas):
    labels = _labels(101, 5)
    ppb = 6
    single = ClassPairBatchSampler(labels, ppb, seed=3, drop_last=drop_last)
    single_pairs = {tuple(p) for p in single.pairs(0).tolist()}
    seen, lengths = [], []
    for rank in range(replicas):
        s = ClassPairBatchSampler(labels, ppb, seed=3, num_replicas=replicas, rank=rank, drop_last=drop_last)
        batches = list(s)
        lengths.append(len(batches))
        assert len(batches) == len(s)
        for batch in batches:
            a, p = _split(batch)
            seen += list(zip(a, p, strict=True))
    assert len(set(lengths)) == 1, "every rank runs the same number of batches"
    assert set(seen) <= single_pairs, "a pair is never split: each (anchor, partner) is a single-process pair"
    if drop_last:
        assert len(seen) == len(set(seen)) == lengths[0] * ppb * replicas
    else:
        assert set(seen) == single_pairs, "without drop_last the ranks together see every pair"


def test_state_dict_resumes_mid_epoch():
    labels = _labels(200, 4)
    s = ClassPairBatchSampler(labels, 10, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2)
    it = iter(s)
    head = [next(it) for _ in range(7)]
    state = s.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == 7
    fresh = ClassPairBatchSampler(labels, 10, seed=5)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)  # what an engine does at the start of the resumed epoch: keeps the offset
    tail = list(fresh)
    assert head + tail == full
    assert len(list(fresh)) == len(full), "the offset applies once"
    with pytest.raises(ValueError, match="seed"):
        ClassPairBatchSampler(labels, 10, seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match="batches per epoch"):
        ClassPairBatchSampler(labels, 20, seed=5).load_state_dict(state)


def test_singleton_classes_follow_the_policy():
    labels = np.array([0, 0, 0, 1, 2, 2])
    with pytest.warns(UserWarning, match=r"single sample and are paired with themselves.*\[1\]"):
        s = ClassPairBatchSampler(labels, 6, seed=0, drop_last=False)
    pairs = s.pairs(0)
    assert [p for a, p in pairs if a == 3] == [3]
    with pytest.warns(UserWarning, match="left out"):
        d = ClassPairBatchSampler(labels, 5, seed=0, singleton="drop")
    assert sorted(d.pairs(0)[:, 0].tolist()) == [0, 1, 2, 4, 5]


def test_any_class_partner_for_ablations():
    labels = np.repeat(np.arange(10), 20)
    s = ClassPairBatchSampler(labels, 50, seed=0, partner="any_class")
    pairs = s.pairs(0)
    assert np.all(pairs[:, 0] != pairs[:, 1])
    assert np.mean(labels[pairs[:, 0]] == labels[pairs[:, 1]]) < 0.3


def test_in_batch_mode_builds_p_classes_by_k_samples():
    labels = np.repeat(np.arange(6), 30)
    s = ClassPairBatchSampler(labels, 8, seed=0, mode="in_batch", samples_per_class=4)
    batches = list(s)
    assert len(batches) == len(s) == (6 * (30 // 4)) // 4  # groups of K per class, P groups per batch
    for batch in batches:
        assert len(batch) == len(set(batch)) == 16, "no image twice in a batch"
        a, p = _split(batch)
        assert np.all(labels[a] == labels[p])
        assert len(set(labels[batch].tolist())) == 4  # P = 2 * 8 / 4 classes
        assert all(np.sum(labels[batch] == c) == 4 for c in set(labels[batch].tolist()))
    used = np.concatenate(batches)
    assert len(set(used.tolist())) == len(used), "no sample twice in an epoch when classes are large enough"
    shards = [
        list(
            ClassPairBatchSampler(
                labels, 8, seed=0, mode="in_batch", samples_per_class=4, num_replicas=2, rank=r
            )
        )
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) and not set(map(tuple, shards[0])) & set(map(tuple, shards[1]))


@pytest.mark.parametrize(
    ("batch", "classes", "k"),
    [(64, 10, 8), (64, 100, 2), (16, 3, 8), (8, 1, 8), (64, 32, 2), (64, 31, 4), (2, 5, 2)],
)
def test_in_batch_mode_chooses_the_smallest_even_group_that_fits_the_classes(batch, classes, k):
    # 64 images from 10 classes: K = 2, 4 would need 32 or 16 classes; 8 x 8 fits. K always divides.
    labels = np.repeat(np.arange(classes), 40)
    s = ClassPairBatchSampler(labels, batch // 2, seed=0, mode="in_batch", samples_per_class=0)
    assert s.samples_per_class == k
    batch0 = next(iter(s))
    assert len(batch0) == batch and len(set(labels[batch0].tolist())) == batch // k


def test_in_batch_mode_uses_every_group_once_even_with_unequal_classes():
    labels = np.repeat(np.arange(5), [40, 40, 40, 40, 8])  # 10, 10, 10, 10 and 2 groups of K = 4
    s = ClassPairBatchSampler(labels, 4, seed=1, mode="in_batch", samples_per_class=4)  # P = 2 classes
    used = np.concatenate(list(s))
    assert len(s) == 21 and len(used) == len(set(used.tolist())) == len(labels)


def test_anchor_fraction_keeps_a_fresh_share_of_the_anchors_each_epoch():
    labels = np.repeat(np.arange(5), 40)  # 200 samples
    full = ClassPairBatchSampler(labels, 10, seed=3)
    half = ClassPairBatchSampler(labels, 5, seed=3, anchor_fraction=0.5)
    # Half the anchors at half the pairs per batch: as many steps and images per step as a plain epoch.
    assert len(half) == len(full) == 20
    epochs = []
    for epoch in range(2):
        half.set_epoch(epoch)
        batches = list(half)
        assert all(len(b) == 10 for b in batches)
        anchors = np.concatenate([_split(b)[0] for b in batches])
        assert len(anchors) == len(set(anchors.tolist())) == 100  # each kept anchor once
        assert all(np.all(labels[a] == labels[p]) for a, p in map(_split, batches))
        epochs.append(set(anchors.tolist()))
    assert epochs[0] != epochs[1], "a new share of anchors each epoch"
    # The kept anchors are the start of the full sampler's order of that epoch: fraction 1 is unchanged.
    assert np.array_equal(half.pairs(0)[:, 0], full.pairs(0)[:100, 0])


def test_dataset_labels_never_loads_images():
    class Exploding(Dataset):
        def __init__(self, targets):
            self.targets = targets

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, i):
            raise AssertionError("an image was loaded")

    ds = Exploding([0, 1, 1, 2, 0])
    assert dataset_labels(ds).tolist() == [0, 1, 1, 2, 0]
    assert dataset_labels(Subset(ds, [4, 2])).tolist() == [0, 1]
    assert dataset_labels(ConcatDataset([ds, Subset(ds, [3])])).tolist() == [0, 1, 1, 2, 0, 2]
    s = ClassPairBatchSampler.from_dataset(ds, 2, seed=0)
    assert len(list(s)) == 2
    with pytest.raises(ValueError, match="cannot find the labels"):
        dataset_labels(TensorDataset(torch.zeros(3)))


def test_works_as_a_dataloader_batch_sampler():
    x = torch.arange(40).float()
    labels = torch.arange(40) % 4
    loader = DataLoader(TensorDataset(x, labels), batch_sampler=ClassPairBatchSampler(labels, 5, seed=0))
    for xb, yb in loader:
        assert xb.shape == (10,) and torch.equal(yb[:5], yb[5:])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": [[0, 1]], "pairs_per_batch": 1}, "1-D"),
        ({"labels": [], "pairs_per_batch": 1}, "empty"),
        ({"labels": [0, -1, 1], "pairs_per_batch": 1}, r"non-negative.*labels\[1\] = -1"),
        ({"labels": [0.5, 1.0], "pairs_per_batch": 1}, "integer class indices"),
        ({"labels": [0, 0, 1, 1], "pairs_per_batch": 5}, "lower pairs_per_batch or pass drop_last=False"),
        ({"labels": [0, 0, 1, 1], "pairs_per_batch": 0}, "positive int"),
        ({"labels": [0, 0, 1, 1], "pairs_per_batch": 1, "num_samples": 5}, "one label per sample"),
        ({"labels": [0, 0, 1, 1], "pairs_per_batch": 1, "rank": 2, "num_replicas": 2}, "rank < num_replicas"),
        ({"labels": [0, 0, 1, 1], "pairs_per_batch": 1, "singleton": "skip"}, "singleton must be one of"),
        (
            {"labels": [0, 0, 1, 1], "pairs_per_batch": 2, "mode": "in_batch", "samples_per_class": 3},
            "even int",
        ),
        ({"labels": [0, 0, 1, 1], "pairs_per_batch": 4, "mode": "in_batch"}, "distinct classes"),
        ({"labels": [0, 0, 1, 1], "pairs_per_batch": 1, "anchor_fraction": 0.0}, "anchor_fraction"),
        ({"labels": [0, 0, 1, 1], "pairs_per_batch": 1, "anchor_fraction": float("nan")}, "anchor_fraction"),
        (
            {"labels": [0, 0, 1, 1], "pairs_per_batch": 1, "mode": "in_batch", "anchor_fraction": 0.5},
            "needs mode='partner'",
        ),
    ],
)
def test_bad_input_raises_a_clear_value_error(kwargs, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=match):
            ClassPairBatchSampler(**kwargs)
