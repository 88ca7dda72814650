"""Segmentation heads on a backbone: logits at the input size, gradients, normalisation."""

from __future__ import annotations

import pytest
import torch

from patchswap.dense.segmentation import SegmentationModel, build_segmentation_model
from patchswap.models import create_model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(("arch", "in_chans"), [("deeplabv3", 1), ("fcn", 3)])
def test_segmentation_logits_at_input_size_and_backward(arch, in_chans):
    backbone = create_model("resnet8", 10, in_chans=in_chans)
    model = build_segmentation_model(
        arch, 4, backbone, image_mean=[0.5] * in_chans, image_std=[0.25] * in_chans
    )
    assert isinstance(model, SegmentationModel)
    x = torch.rand(2, in_chans, 24, 30)
    logits = model.train()(x)
    assert logits.shape == (2, 4, 24, 30)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 4, (2, 24, 30))).backward()
    assert backbone.conv1.weight.grad is not None and backbone.conv1.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert model.eval()(x[:1]).shape == (1, 4, 24, 30)


def test_segmentation_normalises_with_given_statistics():
    backbone = create_model("resnet8", 10, in_chans=1)
    plain = build_segmentation_model("fcn", 3, backbone).eval()
    norm = SegmentationModel(plain.net, image_mean=[0.5], image_std=[0.25]).eval()  # same weights
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(norm(x), plain((x - 0.5) / 0.25))
    with pytest.raises(ValueError, match="unknown segmentation arch"):
        build_segmentation_model("unet", 3, backbone)
