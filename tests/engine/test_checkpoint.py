"""Checkpoint files: atomic writes, clear errors for missing or truncated files, safetensors weights."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from patchswap.engine.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    save_weights,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _checkpoint(model: nn.Module) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    return {
        "state_dict": model.state_dict(),
        "epoch": 3,
        "global_step": 40,
        "optimizer_states": [opt.state_dict()],
    }


# -- atomic_write ------------------------------------------------------------------------------------
def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_write(path, lambda f: f.write(b"first"))
    atomic_write(path, lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_writer_that_fails_midway_leaves_the_old_file_and_no_temp(tmp_path, error):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"old complete checkpoint")

    def writer(f):
        f.write(b"half of the new")
        f.flush()
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, writer)
    assert path.read_bytes() == b"old complete checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    def writer(f):
        f.write(b"partial")
        raise OSError("boom")

    with pytest.raises(OSError, match="boom"):
        atomic_write(tmp_path / "new.ckpt", writer)
    assert list(tmp_path.iterdir()) == []


# -- load_checkpoint ---------------------------------------------------------------------------------
def test_round_trip_through_the_checkpoint_io(tmp_path):
    model = _model()
    ckpt = _checkpoint(model)
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(ckpt, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["global_step"] == 40
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["state_dict"][key], value)
    assert AtomicCheckpointIO().load_checkpoint(path)["epoch"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_checkpoint_says_so(tmp_path, keep):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(_model()), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "corrupt or truncated" in msg and str(path) in msg
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_garbage_is_corrupt(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "does not exist" in str(e.value)


def test_a_file_without_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_model().state_dict(), path)
    with pytest.raises(CheckpointError, match="not a patchswap/Lightning checkpoint"):
        load_checkpoint(path)


# -- save_weights ------------------------------------------------------------------------------------
def test_save_weights_is_loadable_safetensors(tmp_path):
    model = _model()
    _checkpoint(model)  # non-trivial weights and BN statistics
    path = tmp_path / "w" / "last.safetensors"
    save_weights(model, path, metadata={"epoch": "3"})
    tensors = load_file(path)
    state = model.state_dict()
    assert set(tensors) == set(state)
    assert all(torch.equal(tensors[k], state[k]) for k in state)
    fresh = _model()
    fresh.load_state_dict(tensors)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(fresh.eval()(x), model.eval()(x))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"epoch": "3"}
    assert [p.name for p in path.parent.iterdir()] == ["last.safetensors"]
