"""Lightning's checkpoint I/O plugin: atomic saves and the clear corrupt-file error of patchswap.runs."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_checkpoint, tiny_net

from patchswap.engine.checkpoint import AtomicCheckpointIO
from patchswap.runs import CheckpointError, load_checkpoint


def test_round_trip_through_the_checkpoint_io(tmp_path):
    model = tiny_net()
    ckpt = tiny_checkpoint(model)
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
    AtomicCheckpointIO().save_checkpoint(tiny_checkpoint(tiny_net()), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "corrupt or truncated" in msg and str(path) in msg
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        AtomicCheckpointIO().load_checkpoint(path)
