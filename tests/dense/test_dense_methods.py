"""Dense methods as plugins: the registry, the options shared with classification ips, and each step
on tiny batches against hand-checkable values."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from patchswap.dense.methods import (
    IGNORE_INDEX,
    DenseBatch,
    available_dense_methods,
    create_dense_method,
    dense_method_class,
)
from patchswap.engine import load_transfer_config
from patchswap.engine.config import ConfigError
from patchswap.ips_options import DistillOptions, SwapOptions
from patchswap.methods import create_method

K = 3  # classes of the tiny segmentation head


class PixelHead(nn.Module):
    """A 1x1 convolution: each pixel's logits depend on that pixel alone, and it keeps its input."""

    def __init__(self, zero: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, K, 1)
        if zero:
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.conv(x)


def _pairs(n: int = 2, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchors all 0, partners all 1 (so every swapped pixel shows), masks with some ignored pixels."""
    images = torch.cat([torch.zeros(n, 1, size, size), torch.ones(n, 1, size, size)])
    masks = torch.randint(0, K, (2 * n, size, size), generator=torch.Generator().manual_seed(0))
    masks[:, 0, :] = IGNORE_INDEX
    return images, masks


# -- registry --------------------------------------------------------------------------------------
def test_registry_lists_ce_and_ips_and_names_the_valid_ones_on_a_typo():
    assert available_dense_methods() == ["ce", "ips"]
    assert dense_method_class("ips").needs_pairs and not dense_method_class("ce").needs_pairs
    with pytest.raises(
        ValueError,
        match=r"unknown dense method 'ipss' \(did you mean 'ips'\?\); valid dense methods: ce, ips",
    ):
        dense_method_class("ipss")
    with pytest.raises(ValueError, match=r"dense method 'ips' has no option\(s\) \['tempreature'\]"):
        create_dense_method("ips", tempreature=2.0)
    with pytest.raises(ValueError, match="dense ips grid must be at least 2"):
        create_dense_method("ips", grid=1)
    with pytest.raises(ValueError, match=r"dense ips min_visible must be in \(0, 1\]"):
        create_dense_method("ips", min_visible=0.0)


def test_transfer_config_selects_from_the_dense_registry():
    with pytest.raises(ConfigError, match="unknown dense method 'ipss'.*valid dense methods: ce, ips"):
        load_transfer_config(None, {"method": "ipss"})
    cfg = load_transfer_config(None, {"method": "ips", "ips.k_rule": "fixed", "ips.patch_size": "4"})
    assert (cfg.ips.k_rule, cfg.ips.patch_size) == ("fixed", 4)
    with pytest.raises(ConfigError, match="ips.k_rule must be one of uniform, fixed, beta"):
        load_transfer_config(None, {"ips.k_rule": "gauss"})


def test_swap_and_loss_options_are_one_definition_shared_with_classification_ips():
    dense, classify = dense_method_class("ips").Options, type(create_method("ips").options)
    shared = [f.name for f in dataclasses.fields(SwapOptions) + dataclasses.fields(DistillOptions)]
    for cls in (dense, classify):
        assert issubclass(cls, SwapOptions) and issubclass(cls, DistillOptions)
        names = [f.name for f in dataclasses.fields(cls)]
        assert names[: len(shared)] == shared
    assert [f.name for f in dataclasses.fields(dense)][len(shared) :] == ["min_visible"]


def test_dense_methods_import_neither_lightning_nor_the_engine():
    code = (
        "import sys, patchswap.dense.methods; "
        "bad = [m for m in sys.modules if m.startswith(('lightning', 'patchswap.engine'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- segmentation ----------------------------------------------------------------------------------
def test_ce_segment_step_is_the_pixel_cross_entropy():
    """Zero logits over K classes: the CE of every scored pixel is log K."""
    images, masks = _pairs()
    out = create_dense_method("ce")(PixelHead(zero=True), DenseBatch("segment", images, masks))
    assert out.loss.item() == pytest.approx(math.log(K))
    assert out.parts["ce"].item() == pytest.approx(math.log(K))
    assert out.images == 4 and out.logits.shape == (4, K, 8, 8) and out.targets is masks


def test_ips_segment_step_adds_a_zero_kl_for_a_pixelwise_model():
    """Zero logits: CE = log K on all four views and KL = 0, so loss = gamma * log K."""
    images, masks = _pairs()
    method = create_dense_method("ips", prob=1.0, gamma=0.5, alpha=3.0)
    out = method(PixelHead(zero=True), DenseBatch("segment", images, masks, torch.Generator().manual_seed(0)))
    assert out.loss.item() == pytest.approx(0.5 * math.log(K))
    assert out.parts["ce"].item() == pytest.approx(math.log(K)) and out.parts["kl"].item() == 0.0
    assert out.images == 8 and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match=r"\[anchors..., partners...\]"):
        method(PixelHead(), DenseBatch("segment", images[:3], masks[:3]))


def test_ips_honours_k_rule():
    """k_rule=fixed, ratio=0.25 on a 4x4 grid: every pair swaps exactly 4 of 16 cells."""
    images, masks = _pairs(n=3)
    model = PixelHead()
    method = create_dense_method("ips", prob=1.0, grid=4, k_rule="fixed", ratio=0.25)
    out = method(model, DenseBatch("segment", images, masks, torch.Generator().manual_seed(1)))
    swapped_a = model.seen[6:9]  # originals (6 images), then a' (3), then b' (3)
    assert swapped_a.mean(dim=(1, 2, 3)).tolist() == [0.25, 0.25, 0.25]  # partner pixels are 1
    assert out.parts["swap_fraction"].item() == 0.25


def test_ips_honours_patch_size_in_the_swap_and_the_loss():
    """patch_size=3 on 8x8 images: cells end at rows/columns 3 and 6 (a grid of 3 would end at 2 and 5).

    A pixel-wise model gives the swapped view exactly the swapped originals' logits, so the KL is 0
    only when the loss swaps the teachers with the same cells as the images.
    """
    images, masks = _pairs(n=4)
    model = PixelHead()
    method = create_dense_method("ips", prob=1.0, patch_size=3)
    out = method(model, DenseBatch("segment", images, masks, torch.Generator().manual_seed(2)))
    swapped_a = model.seen[8:12, 0]
    assert swapped_a.any()
    for block_rows in (slice(0, 3), slice(3, 6), slice(6, 8)):
        for block_cols in (slice(0, 3), slice(3, 6), slice(6, 8)):
            block = swapped_a[:, block_rows, block_cols]
            assert torch.equal(block.amin(dim=(1, 2)), block.amax(dim=(1, 2)))  # one cell, one source
    assert out.parts["kl"].item() == pytest.approx(0.0, abs=1e-7)
    assert out.parts["ce"].item() > 0 and torch.isfinite(out.loss)


# -- detection ---------------------------------------------------------------------------------------
class FakeDetector(nn.Module):
    """Returns two losses computed from what it is given, like a torchvision detector in training."""

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        self.seen = (images, targets)
        boxes = sum(len(t["boxes"]) for t in targets)
        return {
            "loss_images": torch.stack([im.mean() for im in images]).sum(),
            "loss_boxes": torch.tensor(float(boxes)),
        }


def _detection_pairs() -> tuple[list[torch.Tensor], list[dict]]:
    images = [torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]
    targets = [
        {"boxes": torch.tensor([[0.0, 0.0, 3.0, 3.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[5.0, 5.0, 8.0, 8.0]]), "labels": torch.tensor([1])},
    ]
    return images, targets


def test_ce_detect_step_sums_the_detector_losses():
    images, targets = _detection_pairs()
    out = create_dense_method("ce")(FakeDetector(), DenseBatch("detect", images, targets))
    assert out.loss.item() == pytest.approx(1.0 + 2.0)  # image means 0 + 1, two boxes
    assert set(out.parts) == {"loss_images", "loss_boxes"} and out.images == 2 and out.logits is None


def test_ips_detect_step_adds_swapped_views_with_their_boxes():
    """prob=1 and a 2x2 grid with k fixed at 2: each view keeps half of each image; the boxes sit in
    single cells, so each survives in exactly one view (its own or the partner's)."""
    images, targets = _detection_pairs()
    model = FakeDetector()
    method = create_dense_method("ips", prob=1.0, k_rule="fixed", ratio=0.5)
    out = method(model, DenseBatch("detect", images, targets, torch.Generator().manual_seed(0)))
    seen_images, seen_targets = model.seen
    assert len(seen_images) == 4 and out.images == 4
    assert out.parts["swap_fraction"].item() == 0.5
    # Originals 0 + 1, swapped views 0.5 each; two original boxes plus each box once among the views.
    assert out.parts["loss_images"].item() == pytest.approx(2.0)
    assert out.parts["loss_boxes"].item() == 4.0
    assert out.loss.item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="unknown dense task 'classify'"):
        method(model, DenseBatch("classify", images, targets))
