"""Detection on a backbone: small grayscale images train and predict, anchors follow the strides."""

from __future__ import annotations

import math

import pytest
import torch

from patchswap.dense.detection import build_detection_model
from patchswap.models import create_model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _targets():
    return [
        {"boxes": torch.tensor([[8.0, 8.0, 28.0, 30.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[4.0, 30.0, 22.0, 50.0], [34.0, 10.0, 60.0, 36.0]]),
            "labels": torch.tensor([2, 1]),
        },
    ]


@pytest.mark.parametrize("arch", ["fasterrcnn", "retinanet"])
def test_detection_on_small_grayscale_images(arch):
    backbone = create_model("resnet8", 10, in_chans=1)
    model = build_detection_model(
        arch, 3, backbone, image_size=64, image_mean=[0.13], image_std=[0.3], fpn_channels=32
    )
    assert model.transform.min_size == (64,) and model.transform.max_size == 64
    images = [torch.rand(1, 64, 64) for _ in range(2)]
    model.train()
    losses = model(images, _targets())
    assert losses and all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    assert backbone.conv1.weight.grad is not None and backbone.conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det in out:
        assert det["boxes"].shape[1:] == (4,)
        assert det["boxes"].shape[0] == det["scores"].shape[0] == det["labels"].shape[0]
        if len(det["boxes"]):  # boxes stay in the 64x64 image: no resize to 800
            assert float(det["boxes"].max()) <= 64.0


def test_detection_anchors_follow_the_strides():
    backbone = create_model("resnet8", 10, in_chans=1)  # strides 1, 2, 4
    frcnn = build_detection_model("fasterrcnn", 3, backbone, image_size=64, image_mean=[0.1], image_std=[0.3])
    # The full-resolution stage is left out of the pyramid: strides 2 and 4, + the max-pool level.
    assert frcnn.rpn.anchor_generator.sizes == ((8.0,), (16.0,), (32.0,))
    all_stages = build_detection_model(
        "fasterrcnn", 3, backbone, image_size=64, image_mean=[0.1], image_std=[0.3], stages=3
    )
    assert all_stages.rpn.anchor_generator.sizes == ((4.0,), (8.0,), (16.0,), (32.0,))
    retina = build_detection_model("retinanet", 3, backbone, image_size=64, image_mean=[0.1], image_std=[0.3])
    sizes = retina.anchor_generator.sizes
    assert len(sizes) == 5 and [s[0] for s in sizes] == [4.0, 8.0, 16.0, 32.0, 64.0]  # + P6, P7
    with pytest.raises(ValueError, match="one tuple per pyramid level"):
        build_detection_model(
            "fasterrcnn", 3, backbone, image_size=64, image_mean=[0.1], image_std=[0.3], anchor_sizes=[(8,)]
        )
