"""Backbone transfer to dense models: stage features, loading runs, segmentation and detection forwards."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from patchswap.dense.models import (
    SegmentationModel,
    build_dense_model,
    build_detection_model,
    build_segmentation_model,
    feature_extractor,
    load_backbone,
)
from patchswap.engine.config import RunConfig
from patchswap.models import create_model
from patchswap.runs import CheckpointError, save_weights


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomise_bn(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics, so an eval-mode comparison exercises them."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)


# --------------------------------------------------------------------------- feature extraction


def test_resnet8_stages_match_a_manual_forward():
    model = create_model("resnet8", 10, in_chans=1).eval()
    _randomise_bn(model)
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
    _randomise_bn(model)
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


# --------------------------------------------------------------------------- loading backbones


def _fake_run(root, *, in_chans=1, num_classes=7, data="digits"):
    """A run directory laid out as ``patchswap train`` writes it (config, .ckpt, .safetensors)."""
    model = create_model("resnet8", num_classes, in_chans=in_chans)
    _randomise_bn(model)
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


# --------------------------------------------------------------------------- segmentation


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


# --------------------------------------------------------------------------- detection


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
