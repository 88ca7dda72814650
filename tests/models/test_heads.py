"""The classifier head is found for every model family, and a pretrained file's head can be reset."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from patchswap.models import classifier_names, classifier_parameters, create_model, split_head


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("resnet8", "fc"),
        ("resnet18", "fc"),
        ("wrn_16_2", "fc"),
        ("vgg8", "classifier"),
        ("mobilenetv2", "classifier"),
        ("shufflenetv2", "fc"),
        ("timm:test_resnet", "fc"),
        ("timm:test_efficientnet", "classifier"),
        ("timm:test_vit", "head"),
        ("timm:test_convnext", "head.fc"),
        ("torchvision:resnet18", "fc"),
        ("torchvision:mobilenet_v3_small", "classifier.3"),
    ],
)
def test_classifier_head_is_found(name, head):
    model = create_model(name, 7)
    assert classifier_names(model) == [head]
    head_params, backbone = split_head(model)
    assert {n.rsplit(".", 1)[0] for n, _ in head_params} == {head}
    assert len(head_params) + len(backbone) == len(list(model.parameters()))
    weight = dict(head_params)[f"{head}.weight"]
    assert weight.shape[0] == 7  # the layer that makes the logits


def test_head_is_found_through_torch_compile():
    model = create_model("resnet8", 5)
    compiled = torch.compile(model)
    assert classifier_names(compiled) == ["fc"]
    assert [id(p) for p in classifier_parameters(compiled)] == [id(model.fc.weight), id(model.fc.bias)]


def test_a_model_without_a_linear_head_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot find the classifier head of Sequential"):
        classifier_names(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Flatten()))


def _saved(tmp_path: Path, classes: int = 5) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(1)
    source = create_model("resnet8", classes)
    path = tmp_path / "pretrained.pt"
    torch.save(source.state_dict(), path)
    return source, path


def test_reset_classifier_reinitialises_a_head_of_the_same_shape(tmp_path):
    source, path = _saved(tmp_path)
    with pytest.warns(UserWarning, match=r"2 classifier tensor\(s\) re-initialised \(model.reset_class"):
        model = create_model("resnet8", 5, pretrained=path, reset_classifier=True)
    assert not torch.equal(model.fc.weight, source.fc.weight)
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.layer3[0].bn2.running_var, source.layer3[0].bn2.running_var)


def test_a_same_shape_head_is_loaded_by_default_and_the_log_says_so(tmp_path, caplog):
    source, path = _saved(tmp_path)
    with warnings.catch_warnings(), caplog.at_level("INFO", logger="patchswap.models"):
        warnings.simplefilter("error")
        model = create_model("resnet8", 5, pretrained=path)
    torch.testing.assert_close(model.fc.weight, source.fc.weight, rtol=0, atol=0)
    assert "classifier too: fc.bias, fc.weight; model.reset_classifier resets it" in caplog.text


def test_reset_classifier_with_another_class_count_reports_the_shape(tmp_path):
    _, path = _saved(tmp_path, classes=10)
    with pytest.warns(UserWarning, match=r"skipped 2 tensor\(s\) with a different shape"):
        model = create_model("resnet8", 5, pretrained=path, reset_classifier=True)
    assert model.fc.out_features == 5
