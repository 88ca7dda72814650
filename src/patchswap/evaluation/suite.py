"""The evaluation suite: calibration, FGSM, PGD and common corruptions of one model on one split.

:func:`run_suite` takes a model, the split's uint8 images (an :class:`ImageSource`) and the
normalisation statistics, runs the requested parts and returns one flat, stable dictionary::

    {"images": N, "seed": 0, "settings": {...},
     "calibration": {"acc", "nll", "ece", "aurc", "eaurc", "brier"},
     "reliability": {"edges", "count", "confidence", "accuracy"},
     "fgsm": {"0": acc, "0.00392157": acc, ..., "0.01": acc},
     "pgd": {...same keys...},
     "corruptions": {"mean", "clean", "by_type": {type: acc}, "by_severity": {"1": acc, ...},
                     "table": {type: {"1": acc, ..., "5": acc}}}}

:func:`write_reports` turns it into ``eval.json``, ``eval.md`` and the plots ``reliability.png``,
``adversarial.png`` and ``corruptions.png``. Loading a checkpoint and its data is the engine's job
(``patchswap.engine.evaluate(..., suite=...)``); this module only needs torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..seeding import derive_seed
from .adversarial import PixelModel, eps_key, fgsm_accuracy, pgd_accuracy
from .calibration import calibration_metrics, reliability_bins
from .corruptions import CORRUPTIONS, corrupt
from .images import SEED_BITS, ImageSource, chunk_size
from .reports import REPORT_FILES, plot_adversarial, plot_corruptions, render_markdown, write_reports
from .suite_options import (
    PARTS,
    SuiteOptions,
    parse_corruptions,
    parse_eps,
    parse_parts,
    parse_severities,
)

__all__ = [
    "PARTS",
    "REPORT_FILES",
    "ImageSource",
    "SuiteOptions",
    "corruption_accuracy",
    "fuse_batchnorm",
    "parse_corruptions",
    "parse_eps",
    "parse_parts",
    "parse_severities",
    "plot_adversarial",
    "plot_corruptions",
    "render_markdown",
    "run_suite",
    "write_reports",
]

Log = Callable[[str], None]


def _split(x: torch.Tensor, y: torch.Tensor, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(y), size):
        yield x[start : start + size], y[start : start + size]


def _to_unit(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images.to(device, non_blocking=True).float().div_(255.0)


@torch.no_grad()
def _correct(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device, size: int
) -> int:
    total = 0
    for x, y in _split(images, labels, size):
        total += int((model(_to_unit(x, device)).argmax(1) == y.to(device)).sum())
    return total


@torch.no_grad()
def _logits(
    model: nn.Module, source: ImageSource, device: torch.device, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    outs, labels = [], []
    for x, y in source.batches(size):
        outs.append(model(_to_unit(x, device)).float().cpu())
        labels.append(y.cpu())
    return torch.cat(outs), torch.cat(labels)


def _rebatch(
    source: ImageSource, size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in source.batches(size):
        yield x.to(device), y.to(device)


def corruption_accuracy(
    model: nn.Module,
    source: ImageSource,
    *,
    names: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    log: Log | None = None,
) -> dict[str, Any]:
    """Accuracy of ``model`` (on [0, 1] images) under each corruption and severity, plus the means.

    The corrupted images depend on ``seed``, the images and their order only: chunk ``k`` of type
    ``t`` is corrupted with the seed derived from ``(seed, t, k)``, shared by its severities.
    """
    device = torch.device(device)
    model.eval()
    counts = {n: dict.fromkeys(severities, 0) for n in names}
    seconds = dict.fromkeys(names, 0.0)
    clean = total = 0
    if len(source) == 0:
        raise ValueError("no images to corrupt")
    chunk = chunk_size(*source.image_size)
    for k, (images, labels) in enumerate(source.batches(chunk)):
        images, labels = images.to(device), labels.to(device)
        clean += _correct(model, images, labels, device, batch_size)
        total += len(labels)
        for name in names:
            t0 = time.perf_counter()
            call_seed = derive_seed(seed, CORRUPTIONS.index(name), k, bits=SEED_BITS)
            for sev in severities:
                bad = corrupt(images, name, sev, seed=call_seed)
                counts[name][sev] += _correct(model, bad, labels, device, batch_size)
            seconds[name] += time.perf_counter() - t0
        if log:
            log(f"corruptions: {total:,}/{len(source):,} images")
    table = {n: {str(s): counts[n][s] / total for s in severities} for n in names}
    by_type = {n: float(np.mean(list(table[n].values()))) for n in names}
    by_sev = {str(s): float(np.mean([table[n][str(s)] for n in names])) for s in severities}
    if log:
        slow = ", ".join(f"{n} {seconds[n]:.0f}s" for n in sorted(names, key=lambda n: -seconds[n])[:3])
        log(f"corruptions: slowest types {slow}")
    return {
        "mean": float(np.mean(list(by_type.values()))),
        "clean": clean / total,
        "by_type": by_type,
        "by_severity": by_sev,
        "table": table,
    }


def fuse_batchnorm(model: nn.Module, log: Log | None = None) -> nn.Module:
    """A copy of ``model`` (eval mode) with BatchNorm folded into the preceding convolutions.

    Mathematically the same function (logits differ by ~1e-7), 1.3-1.5x faster on CPU. Models that
    torch.fx cannot trace are returned unchanged.
    """
    import copy

    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(model).eval())
    except Exception as err:  # any tracing failure: keep the model as it is
        if log:
            log(f"BatchNorm folding skipped ({type(err).__name__}); evaluating the model as is")
        return model


def run_suite(
    model: nn.Module,
    source: ImageSource,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    options: SuiteOptions | None = None,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    log: Log | None = None,
) -> dict[str, Any]:
    """Run the parts of ``options`` on ``source``; ``model`` takes normalised inputs (mean/std)."""
    opts = options or SuiteOptions()
    device = torch.device(device)
    model.eval()
    if opts.fuse_batchnorm:
        model = fuse_batchnorm(model, log)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
    pixel = PixelModel(model, mean, std, channels_last=channels_last).to(device).eval()
    size = opts.batch_size or 256
    out: dict[str, Any] = {
        "images": len(source),
        "seed": opts.seed,
        "settings": {
            "parts": list(opts.parts),
            "eps": [eps_key(e) for e in opts.eps],
            "pgd_steps": opts.pgd_steps,
            "pgd_step_size": f"2.5*eps/{opts.pgd_steps}",
            "corruptions": list(opts.corruptions),
            "severities": list(opts.severities),
            "max_images": opts.max_images,
            "batch_size": size,
            "fuse_batchnorm": opts.fuse_batchnorm,
        },
        "seconds": {},
    }

    def timed(part: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        res = fn()
        out["seconds"][part] = round(time.perf_counter() - t0, 2)
        if log:
            log(f"{part}: done in {out['seconds'][part]:.1f} s")
        return res

    if "calibration" in opts.parts:
        logits, labels = timed("calibration", lambda: _logits(pixel, source, device, size))
        out["calibration"] = calibration_metrics(logits, labels)
        out["reliability"] = reliability_bins(logits.softmax(1), labels).to_dict()
    if "fgsm" in opts.parts:
        out["fgsm"] = timed(
            "fgsm", lambda: fgsm_accuracy(pixel, _rebatch(source, size, device), opts.eps, device=device)
        )
    if "pgd" in opts.parts:
        out["pgd"] = timed(
            "pgd",
            lambda: pgd_accuracy(
                pixel,
                _rebatch(source, size, device),
                opts.eps,
                steps=opts.pgd_steps,
                seed=opts.seed,
                device=device,
            ),
        )
    if "corruptions" in opts.parts:
        out["corruptions"] = timed(
            "corruptions",
            lambda: corruption_accuracy(
                pixel,
                source,
                names=opts.corruptions,
                severities=opts.severities,
                seed=opts.seed,
                batch_size=size,
                device=device,
                log=log,
            ),
        )
    return out
