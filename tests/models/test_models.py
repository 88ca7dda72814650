"""Tests for the model zoo, the registry, timm/torchvision access and local-checkpoint loading."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from patchswap.models import available_models, create_model, register_model
from patchswap.models import registry as registry_module

ZOO = [
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "resnet18",
    "resnet34",
    "resnet50",
    "preact_resnet18",
    "wrn_16_2",
    "wrn_40_2",
    "wrn_28_10",
    "vgg8",
    "vgg13",
    "mobilenetv2",
    "shufflenetv2",
]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomise_bn_stats(model: nn.Module) -> None:
    """Make BN buffers non-default so a round trip that forgot buffers would change the outputs."""
    g = torch.Generator().manual_seed(123)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# --------------------------------------------------------------------------- zoo and registry


def test_available_models_lists_zoo_sorted_then_prefixes() -> None:
    names = available_models()
    assert names[: len(ZOO)] == sorted(ZOO)
    assert names[len(ZOO) :] == [
        "timm:<any timm model>",
        "torchvision:<any torchvision classification model>",
    ]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_forward_rgb32_and_gray28(name: str) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        rgb = create_model(name, num_classes=100).eval()
        out = rgb(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 100)
        assert torch.isfinite(out).all()

        gray = create_model(name, num_classes=10, in_chans=1).eval()
        out = gray(torch.randn(2, 1, 28, 28))
        assert out.shape == (2, 10)
        assert torch.isfinite(out).all()
        with pytest.raises(RuntimeError):  # the stem really takes one channel, not three
            gray(torch.randn(2, 3, 28, 28))


@pytest.mark.parametrize("name", ["resnet8", "resnet18", "wrn_16_2", "vgg8", "mobilenetv2", "shufflenetv2"])
def test_zoo_model_accepts_other_input_sizes(name: str) -> None:
    model = create_model(name, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
        assert model(torch.randn(1, 3, 40, 40)).shape == (1, 5)


# Exact counts of this implementation (100 classes) and the figure the KD literature reports
# (CRD / mdistiller / kuangliu tables, millions, rounded to two decimals).
PARAM_COUNTS = {
    "resnet8": (83_892, 0.08),
    "resnet20": (278_324, 0.28),
    "resnet56": (861_620, 0.86),
    "resnet110": (1_736_564, 1.74),
    "resnet8x4": (1_233_540, 1.23),
    "resnet32x4": (7_433_860, 7.43),
    "wrn_16_2": (703_284, 0.70),
    "wrn_40_2": (2_255_156, 2.26),
    "vgg8": (3_965_028, 3.96),
    "mobilenetv2": (812_836, 0.81),
    "shufflenetv2": (1_355_528, 1.36),
    "resnet18": (11_220_132, 11.22),
}


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_counts_match_published_architectures(name: str) -> None:
    exact, published_millions = PARAM_COUNTS[name]
    n = _n_params(create_model(name, num_classes=100))
    assert n == exact
    # Published figures are rounded (or truncated) to 0.01M, hence the absolute floor for tiny models.
    assert abs(n / 1e6 - published_millions) <= max(0.02 * published_millions, 0.005)


def test_builder_kwargs_are_forwarded() -> None:
    wide = create_model("mobilenetv2", 10, width_mult=1.0)
    half = create_model("mobilenetv2", 10)
    assert _n_params(wide) > 2 * _n_params(half)
    wrn = create_model("wrn_16_2", 10, drop_rate=0.3)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in wrn.modules())
    with pytest.raises(ValueError, match="does not take model.kwargs no_such_option=1"):
        create_model("resnet8", 10, no_such_option=1)


def test_register_model_adds_a_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_MODEL_REGISTRY", dict(registry_module._MODEL_REGISTRY))

    @register_model("Tiny_Net")
    def tiny(num_classes: int, in_chans: int = 3) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_chans, num_classes))

    assert "tiny_net" in available_models()
    assert create_model("tiny_net", 4, in_chans=2)(torch.randn(3, 2, 8, 8)).shape == (3, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_net")(tiny)


# --------------------------------------------------------------------------- timm / torchvision


def test_timm_model_gets_sized_classifier_and_input() -> None:
    pytest.importorskip("timm")
    model = create_model("timm:resnet18", num_classes=7).eval()
    assert model.get_classifier().out_features == 7
    gray = create_model("timm:resnet18", num_classes=7, in_chans=1).eval()
    assert gray.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
        assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_torchvision_model_gets_sized_classifier() -> None:
    pytest.importorskip("torchvision")
    model = create_model("torchvision:resnet18", num_classes=7).eval()
    assert model.fc.out_features == 7
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_torchvision_in_chans_replaces_first_conv_keeping_hyperparameters() -> None:
    pytest.importorskip("torchvision")
    model = create_model("torchvision:resnet18", num_classes=7, in_chans=1).eval()
    conv = model.conv1
    assert conv.in_channels == 1 and conv.out_channels == 64
    assert conv.kernel_size == (7, 7) and conv.stride == (2, 2) and conv.padding == (3, 3)
    assert conv.bias is None
    assert conv.weight.std() > 0  # derived from the model's init, not left at zero
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)

    four = create_model("torchvision:mobilenet_v3_small", num_classes=3, in_chans=4).eval()
    assert four.features[0][0].in_channels == 4
    with torch.no_grad():
        assert four(torch.randn(2, 4, 32, 32)).shape == (2, 3)


def test_torchvision_in_chans_impossible_raises() -> None:
    pytest.importorskip("torchvision")
    with pytest.raises(ValueError, match="transform_input"):
        create_model("torchvision:googlenet", 5, in_chans=1, transform_input=True)
    with pytest.raises(ValueError, match="3-channel nn.Conv2d"):
        registry_module._replace_input_conv(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), 1, "toy")


# --------------------------------------------------------------------------- error cases


def test_unknown_zoo_name_lists_choices_and_prefixes() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet9'") as info:
        create_model("resnet9", 10)
    message = str(info.value)
    assert "resnet8" in message and "wrn_40_2" in message
    assert "'timm:<name>'" in message and "'torchvision:<name>'" in message


def test_unknown_timm_name_raises_value_error_with_hint() -> None:
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"Unknown model \(no_such_net_xyz\).*timm\.list_models"):
        create_model("timm:no_such_net_xyz", 10)


def test_unknown_torchvision_name_raises_value_error_with_hint() -> None:
    pytest.importorskip("torchvision")
    with pytest.raises(ValueError, match=r"Unknown model no_such_net_xyz.*list_models"):
        create_model("torchvision:no_such_net_xyz", 10)
    with pytest.raises(ValueError, match="not an image classification model"):
        create_model("torchvision:fasterrcnn_resnet50_fpn", 10)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_classes": 0}, "num_classes must be an integer >= 1"),
        ({"num_classes": -3}, "num_classes must be an integer >= 1"),
        ({"num_classes": 10, "in_chans": 0}, "in_chans must be an integer >= 1"),
        ({"num_classes": 2.5}, "num_classes must be an integer >= 1"),
    ],
)
def test_bad_sizes_raise(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        create_model("resnet8", **kwargs)


# --------------------------------------------------------------------------- pretrained loading


def _source_model(name: str = "resnet8", num_classes: int = 10) -> nn.Module:
    torch.manual_seed(1)
    model = create_model(name, num_classes).eval()
    _randomise_bn_stats(model)
    return model


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_pretrained_round_trip(tmp_path: Path, suffix: str) -> None:
    source = _source_model()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)

    torch.manual_seed(2)
    fresh = create_model("resnet8", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), source(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean load must not warn
        loaded = create_model("resnet8", 10, pretrained=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_pretrained_lightning_checkpoint_with_model_prefix(tmp_path: Path) -> None:
    source = _source_model()
    path = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    torch.save({"epoch": 3, "global_step": 120, "state_dict": state}, path)

    loaded = create_model("resnet8", 10, pretrained=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_pretrained_model_key_and_foreign_keys_outside_prefix(tmp_path: Path) -> None:
    source = _source_model()
    path = tmp_path / "ckpt.pth"
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    state["criterion.class_weights"] = torch.ones(10)
    torch.save({"model": state}, path)

    with pytest.warns(UserWarning, match=r"ignoring 1 key\(s\) outside it: criterion\.class_weights"):
        loaded = create_model("resnet8", 10, pretrained=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_pretrained_different_classifier_is_skipped_with_warning(tmp_path: Path) -> None:
    source = _source_model(num_classes=10)
    path = tmp_path / "cifar10.pt"
    torch.save(source.state_dict(), path)

    with pytest.warns(UserWarning, match=r"skipped 2 tensor\(s\).*fc\.weight.*fc\.bias"):
        loaded = create_model("resnet8", 100, pretrained=str(path))
    assert loaded.fc.out_features == 100
    torch.testing.assert_close(loaded.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(loaded.layer3[0].bn2.running_mean, source.layer3[0].bn2.running_mean)
    with torch.no_grad():
        assert loaded.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_pretrained_missing_and_unexpected_keys_raise(tmp_path: Path) -> None:
    small = tmp_path / "resnet8.pt"
    torch.save(_source_model("resnet8").state_dict(), small)
    with pytest.raises(ValueError, match=r"missing key\(s\): layer1\.1\."):
        create_model("resnet14", 10, pretrained=small)

    big = tmp_path / "resnet14.pt"
    torch.save(_source_model("resnet14").state_dict(), big)
    with pytest.raises(ValueError, match=r"unexpected key\(s\): layer1\.1\."):
        create_model("resnet8", 10, pretrained=big)


def test_pretrained_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "weights.safetensors"
    with pytest.raises(FileNotFoundError, match="nope/weights.safetensors"):
        create_model("resnet8", 10, pretrained=str(missing))


def test_pretrained_file_without_state_dict_raises(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="holds no state_dict"):
        create_model("resnet8", 10, pretrained=path)


class _NotAllowlisted:
    pass


def test_pretrained_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pt"
    torch.save({"state_dict": _source_model().state_dict(), "extra": _NotAllowlisted()}, path)
    with pytest.raises(ValueError, match="unsafe to unpickle"):
        create_model("resnet8", 10, pretrained=path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pt' could not be loaded safely"):
        create_model("resnet8", 10, pretrained=garbage)


def test_pretrained_corrupt_or_truncated_files_say_so(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    good_st, good_pt = tmp_path / "good.safetensors", tmp_path / "good.pt"
    save_file(_source_model().state_dict(), str(good_st))
    torch.save(_source_model().state_dict(), good_pt)
    for good in (good_st, good_pt):
        cut = tmp_path / f"cut{good.suffix}"
        cut.write_bytes(good.read_bytes()[:5000])
        with pytest.raises(ValueError, match=rf"cut\{good.suffix}' is corrupt or truncated"):
            create_model("resnet8", 10, pretrained=cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_text("garbage")
    with pytest.raises(ValueError, match="corrupt or truncated .*model.pretrained"):
        create_model("resnet8", 10, pretrained=junk)


def test_model_kwargs_a_constructor_refuses_or_patchswap_sets_are_named() -> None:
    with pytest.raises(ValueError, match=r"model 'resnet8' does not take model.kwargs foo=1 .*foo"):
        create_model("resnet8", 10, foo=1)
    with pytest.raises(ValueError, match=r"torchvision:resnet18' does not take model.kwargs foo=1"):
        create_model("torchvision:resnet18", 10, foo=1)
    # A keyword the constructor takes, with a value it cannot use: the builder's own error, unchanged.
    with pytest.raises(TypeError, match="size"):
        create_model("mobilenetv2", 10, expansion=2.5)


def test_pretrained_into_torchvision_model(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    torch.manual_seed(3)
    source = create_model("torchvision:resnet18", 5, in_chans=1).eval()
    path = tmp_path / "tv.safetensors"
    from safetensors.torch import save_file

    save_file(source.state_dict(), str(path))
    loaded = create_model("torchvision:resnet18", 5, in_chans=1, pretrained=path).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)
