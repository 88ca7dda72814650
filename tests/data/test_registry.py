"""The dataset registry: registering a name makes build_data load it; unknown names suggest one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchswap.data import (
    DatasetRequest,
    MemorySource,
    TensorImageDataset,
    available_datasets,
    build_data,
    dataset_entry,
    register_dataset,
)
from patchswap.data import registry as registry_module


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> registry_module.NameRegistry:
    """The real registry with its built-ins, restored after the test."""
    reg = registry_module.DATASETS
    reg.entries()  # load the built-ins first, so the copies below hold them
    monkeypatch.setattr(reg, "_entries", dict(reg._entries))
    monkeypatch.setattr(reg, "_aliases", dict(reg._aliases))
    return reg


def _stripes(request: DatasetRequest) -> MemorySource:
    y = np.repeat(np.arange(3), 20)
    x = torch.from_numpy((y[:, None, None, None] * 80 + np.zeros((1, 1, 6, 6), np.int64)).astype(np.uint8))
    train = TensorImageDataset(x, torch.from_numpy(y), ["a", "b", "c"])
    return MemorySource(display=request.name, train=train, classes=train.classes, crop_padding=1, flip=False)


def test_a_registered_name_is_built_and_listed(scratch_registry) -> None:
    register_dataset("stripes", _stripes, aliases=("stripe-set",))
    assert "stripes" in available_datasets()
    b = build_data("Stripe-Set", val_split=6, test_split=0.5, split_seed=1)
    assert b.name == "stripes" and b.classes == ["a", "b", "c"] and b.in_chans == 1
    assert (len(b.train), len(b.val), len(b.test)) == (24, 6, 30)
    assert np.bincount(b.test.targets.numpy()).tolist() == [10, 10, 10]


def test_the_decorator_form_and_duplicate_names(scratch_registry) -> None:
    @register_dataset("stripes2")
    def load(request: DatasetRequest) -> MemorySource:
        return _stripes(request)

    assert dataset_entry("STRIPES2").loader is load
    assert len(build_data("stripes2", val_split=0).train) == 60
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("stripes2", _stripes)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("other", _stripes, aliases=("cifar-10",))
    register_dataset("stripes2", _stripes, replace=True)
    assert dataset_entry("stripes2").loader is _stripes


def test_a_prefixed_name_gets_its_argument(scratch_registry) -> None:
    seen: list[str] = []

    def load(request: DatasetRequest) -> MemorySource:
        seen.append(request.argument)
        return _stripes(request)

    register_dataset("lines", load, prefix="lines:", pattern="lines:WIDTH")
    assert "lines:WIDTH" in available_datasets()
    build_data("lines: 7", val_split=0)
    assert seen == ["7"]


def test_unknown_name_suggests_the_closest_one() -> None:
    with pytest.raises(ValueError, match="Did you mean 'cifar10'") as info:
        build_data("cifr10")
    assert "npz:" in str(info.value) and "folder:" in str(info.value)
    with pytest.raises(ValueError, match="Did you mean 'fashion-mnist'"):
        dataset_entry("fashion-mnst")
    with pytest.raises(ValueError, match="must be non-empty without ':'"):
        register_dataset("a:b", _stripes)
