"""Lightning's checkpoint I/O plugin: atomic saves and the clear corrupt-file error of patchswap.runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from patchswap.engine.checkpoint import AtomicCheckpointIO
from patchswap.runs import CheckpointError, load_checkpoint


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
