"""Fixtures of the evaluation tests: the session's tiny trained digits run as a ready model, and
natural-looking synthetic images (smooth colour blobs with edges) for the corruptions."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from patchswap.engine.config import load_config
from patchswap.engine.training import build_bundle
from patchswap.evaluation.adversarial import PixelModel
from patchswap.models import create_model


@pytest.fixture(scope="session")
def tiny_eval(tiny_run) -> SimpleNamespace:
    """The tiny run's best network in eval mode, its PixelModel, and its uint8 test images."""
    run_dir, summary = tiny_run
    cfg = load_config([Path(run_dir) / "config.yaml"])
    bundle = build_bundle(cfg)
    model = create_model(cfg.model.name, bundle.num_classes, in_chans=bundle.in_chans)
    model.load_state_dict(load_file(Path(run_dir) / "checkpoints" / "best.safetensors"))
    model.eval()
    return SimpleNamespace(
        run_dir=Path(run_dir),
        summary=summary,
        bundle=bundle,
        model=model,
        pixel=PixelModel(model, bundle.mean, bundle.std).eval(),
        images=bundle.test.images,
        labels=bundle.test.targets,
    )


def synthetic_images(n: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """uint8 ``[n, C, H, W]``: a smooth background gradient plus soft blobs and one hard-edged box."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    out = torch.empty(n, channels, height, width)
    for i in range(n):
        base = torch.rand(channels, 1, 1, generator=gen) * 0.6 + 0.2
        slope = (torch.rand(channels, 2, generator=gen) - 0.5) * 0.6
        img = base + slope[:, :1, None] * yy + slope[:, 1:, None] * xx
        for _ in range(4):
            cy, cx, r = torch.rand(3, generator=gen)
            amp = (torch.rand(channels, 1, 1, generator=gen) - 0.5) * 0.8
            img = img + amp * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.05 * r))
        y0, x0 = (torch.rand(2, generator=gen) * 0.5).tolist()
        box = (yy > y0) & (yy < y0 + 0.4) & (xx > x0) & (xx < x0 + 0.4)
        img = torch.where(box, img * 0.5, img)
        out[i] = img
    return (out.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="session")
def make_images():
    """``make_images(n, C, H, W, seed)`` -> synthetic uint8 images (see :func:`synthetic_images`)."""
    return synthetic_images


@pytest.fixture(scope="session")
def rgb32() -> torch.Tensor:
    return synthetic_images(6, 3, 32, 32, seed=1)
