"""Stage features of a backbone: each stage equals a manual forward, modes and errors."""

from __future__ import annotations

import pytest
import torch
from helpers import randomise_bn

from patchswap.dense.features import feature_extractor
from patchswap.models import create_model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_resnet8_stages_match_a_manual_forward():
    model = create_model("resnet8", 10, in_chans=1).eval()
    randomise_bn(model)
    extractor, channels, strides = feature_extractor(model)
    assert channels == [16, 32, 64]
    assert strides == [1, 2, 4]
    x = torch.randn(2, 1, 28, 36)
    with torch.no_grad():
        feats = extractor.eval()(x)
        h = model.relu(model.bn1(model.conv1(x)))
        manual = []
        for stage in (model.layer1, model.layer2, model.layer3):
            h = stage(h)
            manual.append(h)
        logits = model(x)
    assert list(feats) == ["0", "1", "2"]
    for got, want in zip(feats.values(), manual, strict=True):
        torch.testing.assert_close(got, want)
    # The last stage is exactly what the classifier pools.
    torch.testing.assert_close(model.fc(model.avgpool(feats["2"]).flatten(1)), logits)
    assert extractor.training is False and model.training is False


def test_torchvision_resnet18_stages_and_deepest_subset():
    model = create_model("torchvision:resnet18", 5).eval()
    extractor, channels, strides = feature_extractor(model)
    assert channels == [64, 128, 256, 512]
    assert strides == [4, 8, 16, 32]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        last = extractor.eval()(x)["3"]
        torch.testing.assert_close(model.fc(model.avgpool(last).flatten(1)), model(x))
    _, channels2, strides2 = feature_extractor(model, stages=2)
    assert (channels2, strides2) == ([256, 512], [16, 32])
    with pytest.raises(ValueError, match="stages"):
        feature_extractor(model, stages=5)


def test_wide_resnet_last_stage_includes_final_bn_relu():
    model = create_model("wrn_16_2", 3, in_chans=1).eval()
    randomise_bn(model)
    extractor, channels, strides = feature_extractor(model)
    assert (channels, strides) == ([32, 64, 128], [1, 2, 4])
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        last = extractor.eval()(x)["2"]
        torch.testing.assert_close(model.fc(model.avgpool(last).flatten(1)), model(x))


def test_unsupported_architecture_names_the_families():
    with pytest.raises(ValueError, match="layer1..layerN"):
        feature_extractor(create_model("vgg8", 3, in_chans=1))


def test_feature_extractor_keeps_training_mode():
    model = create_model("resnet8", 3, in_chans=1).train()
    before = model.bn1.running_mean.clone()
    extractor, _, _ = feature_extractor(model)
    assert model.training and extractor.training
    torch.testing.assert_close(model.bn1.running_mean, before)  # the dry run left BN statistics alone
