"""Class predictions for image files with a trained run: ``patchswap predict RUN PATH...``.

Each file goes through the run's eval transform -- for image-folder data the per-item eval transform of
training (resize the shorter side to ``S * 256 / 224``, centre-crop ``S``), for in-memory data a resize
to the stored ``H x W`` (antialiased bilinear, as the dataset was resized once at load time), with the
run's channels (RGB or grayscale) -- then the run's normalisation, in batches. Probabilities are
``softmax(logits / T)`` with the run's calibrated temperature when ``patchswap calibrate`` stored one.

A file that cannot be read or decoded becomes a row with its error; the other files still run.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .calibrate import apply_temperature, load_temperature
from .loading import DeployError, LoadedRun, load_run

__all__ = [
    "IMAGE_EXTENSIONS",
    "Prediction",
    "file_transform",
    "find_images",
    "format_predictions",
    "predict",
    "write_predictions",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class Prediction:
    """The top-k of one file (most probable first), or the error that kept it from being read."""

    path: str
    classes: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Files in the order given; folders walked recursively (sorted) for the common image extensions.

    A path named explicitly is always kept (a missing or non-image one then reports its error).
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs.sort()
                found.extend(Path(root) / f for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
            out.extend(found)
        else:
            out.append(p)
    return out


def _to_uint8(image: Any) -> torch.Tensor:
    """uint8 ``[C, H, W]`` of a PIL image."""
    from torchvision.transforms.functional import pil_to_tensor

    return pil_to_tensor(image)


class _FileTransform:
    """PIL image -> uint8 ``[C, H, W]`` as the run's eval pipeline sees it."""

    def __init__(self, run: LoadedRun) -> None:
        self.mode = "L" if run.in_chans == 1 else "RGB"
        if run.in_chans not in (1, 3):
            raise DeployError(
                f"predicting from image files needs 1 or 3 channels, the run has {run.in_chans}"
            )
        self.size = run.image_size
        self.folder = None
        if not run.bundle.in_memory:  # image folders: the data's own decode and eval crop
            self.folder = run.bundle.train
            while not hasattr(self.folder, "eval_crop"):  # a carved train split: a subset of the folder
                self.folder = self.folder.dataset
        self.describe = (
            f"resize shorter side to {int(self.size[0] / self.folder.crop_pct)}, centre crop {self.size[0]}"
            if self.folder is not None
            else f"resize to {self.size[0]}x{self.size[1]} (bilinear, antialiased)"
        )

    def __call__(self, image: Any) -> torch.Tensor:
        x = _to_uint8(image.convert(self.mode))
        if self.folder is not None:
            return self.folder.eval_crop(x)
        if tuple(x.shape[1:]) != tuple(self.size):
            x = F.interpolate(x[None].float(), size=self.size, mode="bilinear", antialias=True)[0]
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        return x


def file_transform(run: LoadedRun) -> _FileTransform:
    """The per-file eval transform of ``run`` (``.describe`` says what it does)."""
    return _FileTransform(run)


def _read(path: Path, transform: _FileTransform) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decode now: a truncated file fails here, not later
        return transform(img)


def predict(
    target: str | Path | LoadedRun,
    paths: Sequence[str | Path],
    *,
    top_k: int = 5,
    batch_size: int = 64,
    temperature: float | None | str = "auto",
    device: str | torch.device | None = "cpu",
) -> list[Prediction]:
    """Top-``k`` classes with probabilities for each image in ``paths`` (files and folders).

    ``temperature``: ``"auto"`` applies the run's calibration when stored, a number applies that, None
    applies none.
    """
    if top_k < 1 or batch_size < 1:
        raise DeployError(f"top_k and batch_size must be >= 1, got {top_k} and {batch_size}")
    run = target if isinstance(target, LoadedRun) else load_run(target, device=device, need_data=False)
    if temperature == "auto":
        temperature = load_temperature(run.checkpoint)
    k = min(top_k, len(run.classes))
    transform = file_transform(run)
    files = find_images(paths)
    if not files:
        raise DeployError(f"no image files in {', '.join(map(str, paths))} (extensions {IMAGE_EXTENSIONS})")
    results: list[Prediction] = []
    pending: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        logits = apply_temperature(run.logits(torch.stack([x for _, x in pending])).cpu(), temperature)
        probs, idx = logits.double().softmax(1).topk(k, dim=1)
        for (row, _), p, i in zip(pending, probs.tolist(), idx.tolist(), strict=True):
            pred = results[row]
            pred.indices, pred.probabilities = i, p
            pred.classes = [run.classes[j] for j in i]
        pending.clear()

    for path in files:
        results.append(Prediction(str(path)))
        try:
            x = _read(path, transform)
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported, never fatal
            results[-1].error = f"{type(e).__name__}: {e}"
            continue
        pending.append((len(results) - 1, x))
        if len(pending) >= batch_size:
            flush()
    flush()
    return results


def write_predictions(preds: Sequence[Prediction], out: str | Path, *, meta: dict | None = None) -> Path:
    """``.json`` (a list of rows, plus ``meta``) or ``.csv`` (one row per file: path, class_i, prob_i,
    ..., error)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps({**(meta or {}), "predictions": [asdict(p) for p in preds]}, indent=2))
        return out
    if out.suffix.lower() != ".csv":
        raise DeployError(f"--out must end in .csv or .json, got {out.name}")
    k = max((len(p.classes) for p in preds), default=0)
    header = ["path"] + [f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "prob")] + ["error"]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for p in preds:
            cells: list[Any] = [p.path]
            for i in range(k):
                if i < len(p.classes):
                    cells += [p.classes[i], f"{p.probabilities[i]:.6f}"]
                else:
                    cells += ["", ""]
            writer.writerow([*cells, p.error or ""])
    return out


def format_predictions(preds: Sequence[Prediction], *, top_k: int | None = None) -> str:
    """A readable table: one line per file, ``class (prob%)`` for each of the top k, or the error."""
    if not preds:
        return "(no files)"
    width = min(60, max(len(p.path) for p in preds))
    lines = [f"{'file':<{width}}  top classes (probability)"]
    for p in preds:
        name = p.path if len(p.path) <= width else "..." + p.path[-(width - 3) :]
        if p.error:
            text = f"ERROR {p.error}"
        else:
            pairs = list(zip(p.classes, p.probabilities, strict=True))[: top_k or None]
            text = "  ".join(f"{c} ({100 * q:.1f}%)" for c, q in pairs)
        lines.append(f"{name:<{width}}  {text}")
    bad = sum(p.error is not None for p in preds)
    lines.append(f"{len(preds) - bad} predicted, {bad} unreadable")
    return "\n".join(lines)
