"""Backbone transfer to dense models end to end: a task name, an architecture and a backbone spec."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from patchswap.dense.models import build_dense_model, load_backbone


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_load_backbone_from_a_real_training_run(tmp_path, tiny_overrides, single_thread):
    from patchswap.engine import train
    from patchswap.engine.config import load_config

    run = tmp_path / "run"
    overrides = tiny_overrides(
        run,
        trainer__epochs=1,
        trainer__limit_train_batches=2,
        data__train_subset=64,
        data__eval_batch_size=512,
    )
    train(load_config(None, overrides))
    model, origin, _ = load_backbone(str(run), in_chans=1)
    assert origin.endswith("best.ckpt")
    saved = load_file(str(run / "checkpoints" / "best.safetensors"))
    own = model.state_dict()
    assert own["fc.weight"].shape == (10, 64)  # digits: 10 classes
    for key, value in saved.items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0)
    # The dense model really runs on those weights.
    seg, _, _ = build_dense_model(
        "segment", "fcn", 3, str(run), in_chans=1, image_size=32, image_mean=[0.3], image_std=[0.3]
    )
    prefix = "net.backbone.features.body."
    seg_state = {k.removeprefix(prefix): v for k, v in seg.state_dict().items() if k.startswith(prefix)}
    assert set(seg_state) == {k for k in saved if not k.startswith("fc.")}  # all but the classifier
    for key, value in seg_state.items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)


def test_build_dense_model_from_a_name():
    model, origin, backbone_name = build_dense_model(
        "segment",
        "deeplabv3",
        5,
        "resnet8",
        in_chans=3,
        image_size=32,
        image_mean=[0.5] * 3,
        image_std=[0.2] * 3,
    )
    assert model.eval()(torch.rand(1, 3, 20, 20)).shape == (1, 5, 20, 20)
    assert "random" in origin and backbone_name == "resnet8"
    det, _, _ = build_dense_model(
        "detect", "retinanet", 5, "resnet8", in_chans=1, image_size=64, image_mean=[0.5], image_std=[0.2]
    )
    assert type(det).__name__ == "RetinaNet"
    with pytest.raises(ValueError, match="segment or detect"):
        build_dense_model(
            "classify", "fcn", 5, "resnet8", in_chans=1, image_size=8, image_mean=[0], image_std=[1]
        )
