"""Hub weights, offline: a small weights file built here, placed exactly where each hub cache keeps it,
then loaded through the code path a download takes (timm -> huggingface_hub, torchvision -> torch.hub)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from patchswap.models import PretrainedNotCachedError, PretrainedReport, create_model, pretrained_input
from patchswap.models.pretrained import hf_hub_cache_dir, parse_pretrained, torch_hub_checkpoint_dir

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

TIMM_NAME = "test_resnet.r160_in1k"  # timm's own tiny test model with hub weights (160 px, mean/std 0.5)
TV_NAME = "mobilenet_v3_small"


@pytest.fixture
def offline_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty HF and torch caches under tmp_path, and huggingface_hub in offline mode."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read by huggingface_hub at import time
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def _put_in_hf_cache(cache: Path, repo_id: str, state: dict[str, torch.Tensor]) -> Path:
    """The layout huggingface_hub writes: blobs/<etag>, snapshots/<commit>/<file> -> blob, refs/main."""
    from safetensors.torch import save_file

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    blob = repo / "blobs" / "e7a0c3d1f2b4"
    save_file({k: v.contiguous() for k, v in state.items()}, str(blob))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, snap), snap / "model.safetensors")
    return snap / "model.safetensors"


def test_timm_true_loads_cached_hub_weights_offline_and_resizes_the_classifier(offline_caches: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model(TIMM_NAME).eval()
    assert hf_hub_cache_dir() == offline_caches / "hf" / "hub"
    _put_in_hf_cache(hf_hub_cache_dir(), f"timm/{TIMM_NAME}", source.state_dict())
    total = len(source.state_dict())

    expected = (
        rf"loaded {total - 2}/{total} tensors from timm hub timm/{re.escape(TIMM_NAME)} "
        r"\(.*model\.safetensors\); "
        r"skipped fc\.bias, fc\.weight \(classifier resized 1000 -> 7\)"
    )
    with pytest.warns(PretrainedReport, match=expected):
        model = create_model(f"timm:{TIMM_NAME}", 7, pretrained="true").eval()
    assert model.fc.out_features == 7
    own = model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key

    # A YAML `true` (bool) and the untagged name resolve to the same cached weights.
    with pytest.warns(PretrainedReport, match="classifier resized 1000 -> 3"):
        again = create_model("timm:test_resnet", 3, pretrained=True)
    assert torch.equal(again.conv1[0].weight, source.conv1[0].weight)


def test_timm_true_without_cache_names_the_cache_folder_and_the_file_alternative(
    offline_caches: Path,
) -> None:
    folder = offline_caches / "hf" / "hub" / f"models--timm--{TIMM_NAME}"
    with pytest.raises(PretrainedNotCachedError) as info:
        create_model(f"timm:{TIMM_NAME}", 7, pretrained="true")
    message = str(info.value)
    assert str(folder) in message and "HF_HUB_OFFLINE" in message
    assert "--model.pretrained PATH.safetensors" in message


def test_torchvision_weights_name_loads_from_the_torch_hub_cache_and_replaces_the_head(
    offline_caches: Path,
) -> None:
    weights = torchvision.models.get_weight("MobileNet_V3_Small_Weights.IMAGENET1K_V1")
    torch.manual_seed(0)
    source = torchvision.models.get_model(TV_NAME).eval()
    file = torch_hub_checkpoint_dir() / os.path.basename(weights.url)
    assert file.parent == offline_caches / "torch" / "hub" / "checkpoints"
    file.parent.mkdir(parents=True)
    torch.save(source.state_dict(), file)
    total = len(source.state_dict())

    expected = (
        rf"loaded {total - 2}/{total} tensors from torchvision MobileNet_V3_Small_Weights\.IMAGENET1K_V1 "
        r".*skipped classifier\.3\.weight, classifier\.3\.bias \(classifier replaced 1000 -> 5\)"
    )
    for spec in ("IMAGENET1K_V1", "DEFAULT", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "true"):
        with pytest.warns(PretrainedReport, match=expected):
            model = create_model(f"torchvision:{TV_NAME}", 5, pretrained=spec).eval()
        assert model.classifier[3].out_features == 5
        own = model.state_dict()
        for key, value in source.state_dict().items():
            if not key.startswith("classifier.3."):
                assert torch.equal(own[key], value), key
        with torch.no_grad():
            assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)

    # A grayscale input gets the stem rebuilt from the pretrained kernel (channels summed).
    with pytest.warns(PretrainedReport):
        gray = create_model(f"torchvision:{TV_NAME}", 5, in_chans=1, pretrained="IMAGENET1K_V1")
    stem = source.features[0][0].weight
    torch.testing.assert_close(gray.features[0][0].weight, stem.sum(1, keepdim=True))


def test_torchvision_weights_without_cache_or_network_name_the_file(
    offline_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    weights = torchvision.models.get_weight("MobileNet_V3_Small_Weights.IMAGENET1K_V1")
    file = offline_caches / "torch" / "hub" / "checkpoints" / os.path.basename(weights.url)
    with pytest.raises(PretrainedNotCachedError) as info:
        create_model(f"torchvision:{TV_NAME}", 5, pretrained="IMAGENET1K_V1")
    assert str(file) in str(info.value) and "--model.pretrained PATH.safetensors" in str(info.value)


def test_bad_pretrained_specs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"valid: IMAGENET1K_V1, DEFAULT"):
        create_model(f"torchvision:{TV_NAME}", 5, pretrained="IMAGENET9K")
    with pytest.raises(ValueError, match="zoo model 'resnet8' has none"):
        create_model("resnet8", 5, pretrained="true")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        create_model(f"timm:{TIMM_NAME}", 5, pretrained="nope.safetensors")
    assert parse_pretrained("resnet8", None) is None and parse_pretrained("timm:x", "false") is None
    assert parse_pretrained("torchvision:resnet50", "w/x.pt").source == "file"


def test_pretrained_input_size_and_statistics() -> None:
    assert pretrained_input(f"timm:{TIMM_NAME}", "true") == (160, (0.5,) * 3, (0.5,) * 3)
    size, mean, std = pretrained_input(f"torchvision:{TV_NAME}", "IMAGENET1K_V1")
    assert (
        size == 224
        and mean == pytest.approx((0.485, 0.456, 0.406))
        and std == pytest.approx((0.229, 0.224, 0.225))
    )
    assert pretrained_input(f"timm:{TIMM_NAME}", None) is None
    assert pretrained_input(f"timm:{TIMM_NAME}", "weights.safetensors") is None
