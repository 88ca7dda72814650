"""Temperature scaling (Guo et al., ICML 2017): one scalar ``T`` so that ``softmax(logits / T)`` is
calibrated, fitted on the validation split by minimising NLL.

``NLL(logits * b)`` is convex in ``b = 1 / T``, hence unimodal in ``log T``; a golden-section search
on ``log T`` over ``[log 0.05, log 20]`` finds the minimum without step sizes or line searches that
can diverge (LBFGS on a badly scaled problem can). The test split is only reported, never used to fit.

The fitted temperature is stored as ``RUN/calibration.json`` (with the checkpoint it belongs to and a
digest of that file), so ``eval`` and ``predict`` apply it when present: :func:`load_temperature`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from patchswap.evaluation.calibration import expected_calibration_error, nll
from patchswap.runs import locate_checkpoint, run_dir_of

from .loading import DeployError, LoadedRun, load_run

__all__ = [
    "CALIBRATION_FILE",
    "CalibrationReport",
    "SplitCalibration",
    "TemperatureScaled",
    "apply_temperature",
    "calibrate",
    "calibration_path",
    "fit_temperature",
    "format_calibration",
    "load_calibration",
    "load_temperature",
]

CALIBRATION_FILE = "calibration.json"
T_BOUNDS = (0.05, 20.0)


class TemperatureScaled(torch.nn.Module):
    """``model``'s logits divided by a calibrated temperature: same argmax, calibrated softmax."""

    def __init__(self, model: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def apply_temperature(logits: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """``logits / T`` (unchanged for None or 1)."""
    if temperature is None or temperature == 1.0:
        return logits
    return logits / float(temperature)


def _nll_at(logits: torch.Tensor, labels: torch.Tensor, log_t: float) -> float:
    return float(F.cross_entropy(logits * math.exp(-log_t), labels))


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, *, bounds: tuple[float, float] = T_BOUNDS, tol: float = 1e-6
) -> float:
    """The ``T`` in ``bounds`` minimising ``NLL(softmax(logits / T), labels)`` (golden section on log T)."""
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise ValueError(
            f"fit_temperature needs logits [N, K] and labels [N] with N > 0, got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    z, y = logits.detach().double().cpu(), labels.detach().long().cpu()
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll_at(z, y, a), _nll_at(z, y, b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll_at(z, y, a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll_at(z, y, b)
    return math.exp((lo + hi) / 2)


@dataclass
class SplitCalibration:
    """Accuracy (unchanged by T), and NLL / ECE (15 bins) before and after temperature scaling."""

    images: int
    acc: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


def _measure(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> SplitCalibration:
    scaled = apply_temperature(logits.double(), temperature)
    return SplitCalibration(
        images=int(labels.numel()),
        acc=float((logits.argmax(1) == labels).double().mean()),
        nll_before=nll(logits, labels),
        nll_after=nll(scaled, labels),
        ece_before=expected_calibration_error(logits.softmax(1), labels),
        ece_after=expected_calibration_error(scaled.softmax(1).float(), labels),
    )


@dataclass
class CalibrationReport:
    """What ``patchswap calibrate`` measured and stored (``RUN/calibration.json``)."""

    temperature: float
    checkpoint: str
    checkpoint_sha256: str
    fitted_on: str
    val: SplitCalibration
    test: SplitCalibration | None = None
    at_bound: bool = False
    bounds: tuple[float, float] = field(default=T_BOUNDS)
    path: str | None = None  # where it was stored (None: not written)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def calibration_path(checkpoint: str | Path) -> Path:
    """Where the calibration of ``checkpoint`` lives: ``RUN/calibration.json`` (beside a loose file)."""
    ckpt = Path(checkpoint)
    run_dir = run_dir_of(ckpt)
    return (run_dir if run_dir is not None else ckpt.parent) / CALIBRATION_FILE


def calibrate(
    target: str | Path | LoadedRun,
    *,
    device: str | torch.device | None = "cpu",
    batch_size: int = 256,
    write: bool = True,
) -> CalibrationReport:
    """Fit the temperature of a run on its validation split; report val and test; store it (``write``)."""
    run = target if isinstance(target, LoadedRun) else load_run(target, device=device)
    if run.bundle.val is None:
        raise DeployError(
            "calibrate fits the temperature on the validation split and this run has none "
            "(data.val_split=0): retrain with a validation split, or temperature would be fitted on test"
        )
    val_logits, val_labels = run.split_logits("val", batch_size)
    temperature = fit_temperature(val_logits, val_labels)
    at_bound = any(abs(math.log(temperature / b)) < 1e-3 for b in T_BOUNDS)
    test = None
    if run.bundle.test is not None:
        test_logits, test_labels = run.split_logits("test", batch_size)
        test = _measure(test_logits, test_labels, temperature)
    report = CalibrationReport(
        temperature=temperature,
        checkpoint=run.checkpoint.name,
        checkpoint_sha256=_sha256(run.checkpoint),
        fitted_on="val",
        val=_measure(val_logits, val_labels, temperature),
        test=test,
        at_bound=at_bound,
    )
    if write:
        path = calibration_path(run.checkpoint)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(
            json.dumps({k: v for k, v in report.to_dict().items() if k != "path"}, indent=2) + "\n"
        )
        tmp.replace(path)
        report.path = str(path)
    return report


def load_calibration(target: str | Path) -> dict[str, Any] | None:
    """The stored calibration of a run directory or checkpoint, if it belongs to that checkpoint.

    A ``calibration.json`` fitted on another checkpoint of the run (``best`` vs ``last``), or on a
    checkpoint that has since been rewritten (a resumed run), does not apply: None.
    """
    try:
        ckpt = locate_checkpoint(target)
    except RuntimeError:
        return None
    path = calibration_path(ckpt)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        float(data["temperature"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data.get("checkpoint") != ckpt.name or data.get("checkpoint_sha256") != _sha256(ckpt):
        return None
    return data


def load_temperature(target: str | Path) -> float | None:
    """The calibrated temperature of a run directory or checkpoint (None: not calibrated, or stale)."""
    data = load_calibration(target)
    return None if data is None else float(data["temperature"])


def format_calibration(report: CalibrationReport) -> str:
    """The table ``patchswap calibrate`` prints."""
    lines = [
        f"temperature {report.temperature:.4f} (fitted on val, {report.val.images} images; "
        f"checkpoint {report.checkpoint})",
        "",
        f"{'split':<6} {'images':>7} {'acc':>8} {'NLL before':>11} {'NLL after':>10} "
        f"{'ECE before':>11} {'ECE after':>10}",
    ]
    for name, s in (("val", report.val), ("test", report.test)):
        if s is None:
            continue
        lines.append(
            f"{name:<6} {s.images:>7} {100 * s.acc:>7.2f}% {s.nll_before:>11.4f} {s.nll_after:>10.4f} "
            f"{100 * s.ece_before:>10.2f}% {100 * s.ece_after:>9.2f}%"
        )
    if report.test is not None:
        lines.append("(test is reported only: the temperature never sees it)")
    if report.at_bound:
        lines.append(f"warning: the temperature hit the search bound {report.bounds}")
    if report.path is not None:
        lines.append(f"wrote {report.path}")
    return "\n".join(lines)
