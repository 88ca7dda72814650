"""Loading a backbone: run directories, checkpoints and model names, and the errors in between."""

from __future__ import annotations

import pytest
import torch
from helpers import randomise_bn

from patchswap.dense.backbones import load_backbone
from patchswap.engine.config import RunConfig
from patchswap.models import create_model
from patchswap.runs import CheckpointError, save_weights


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _fake_run(root, *, in_chans=1, num_classes=7, data="digits"):
    """A run directory laid out as ``patchswap train`` writes it (config, .ckpt, .safetensors)."""
    model = create_model("resnet8", num_classes, in_chans=in_chans)
    randomise_bn(model)
    cfg = RunConfig()
    cfg.data.name = data
    cfg.model.name = "resnet8"
    root.mkdir(parents=True)
    cfg.dump(root / "config.yaml")
    ckpt_dir = root / "checkpoints"
    save_weights(model, ckpt_dir / "best.safetensors")
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["method.buffer"] = torch.zeros(3)  # other module state must be ignored
    torch.save({"state_dict": state, "patchswap_config": cfg.to_dict(), "epoch": 0}, ckpt_dir / "best.ckpt")
    return model


def _assert_same_weights(model, reference):
    got, want = model.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_load_backbone_from_run_dir_ckpt_and_safetensors(tmp_path):
    run = tmp_path / "run"
    reference = _fake_run(run)
    for spec in (run, run / "checkpoints" / "best.ckpt", run / "checkpoints" / "best.safetensors"):
        model, origin, name = load_backbone(str(spec), in_chans=1)
        _assert_same_weights(model, reference)  # 7 classes and 1 channel read back from the weights
        assert "resnet8" in origin and "digits" in origin and "checkpoints" in origin
        assert name == "resnet8"


def test_load_backbone_errors(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    with pytest.raises(ValueError, match=r"1-channel images \(data.name='digits'\).*in_chans=3"):
        load_backbone(str(run), in_chans=1 + 2)
    with pytest.raises(FileNotFoundError, match="neither an existing"):
        load_backbone(str(tmp_path / "nope" / "best.ckpt"), in_chans=1)
    with pytest.raises(FileNotFoundError, match="not a patchswap run directory"):
        load_backbone(str(tmp_path), in_chans=1)
    # Copied away from the run: no stored config and no config.yaml beside the file.
    loose = tmp_path / "loose"
    loose.mkdir()
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    del ckpt["patchswap_config"]
    torch.save(ckpt, loose / "model.ckpt")
    (loose / "model.safetensors").write_bytes((run / "checkpoints" / "best.safetensors").read_bytes())
    for name in ("model.ckpt", "model.safetensors"):
        with pytest.raises(CheckpointError, match="config"):
            load_backbone(str(loose / name), in_chans=1)


def test_load_backbone_by_model_name():
    model, origin, name = load_backbone("resnet8", in_chans=3)
    assert model.conv1.in_channels == 3 and "random" in origin and name == "resnet8"
    model, _, name = load_backbone("torchvision:resnet18", in_chans=1)
    assert model.conv1.in_channels == 1 and name == "torchvision:resnet18"
