"""Export a trained run as one self-contained file: ONNX, TorchScript or a torch.export ExportedProgram.

The file, its input contract (uint8 NCHW, 0..255, normalisation and temperature folded in) and its
metadata are :mod:`patchswap.deploy.formats`; this module is the entry point around it.

After writing, :func:`export` verifies the file in its runtime (onnxruntime on CPU; the reloaded
TorchScript module; the reloaded ExportedProgram) against PyTorch on a held batch of the run's test
split (else val): max |logit difference| within ``tol = 1e-4 * (1 + max |logit|)``. A dynamically
quantized file (``quantize="dynamic"``; onnx: onnxruntime ``quantize_dynamic``, int8 weights of Conv,
MatMul/Gemm; torchscript: ``torch.ao`` int8 ``nn.Linear`` layers only; exported-program: not
supported) is checked by test accuracy before and after instead. File size and batch-1 CPU latency
(median) of the original and of the export are measured either way; :func:`format_export` prints the
report.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .calibrate import load_temperature
from .formats import (
    FORMATS,
    INPUT_CONTRACT,
    QUANTIZABLE,
    SUFFIXES,
    DeployModel,
    UnsupportedOperationError,
    export_metadata,
    load_exported,
    operation_name,
    read_metadata,
    write_export,
)
from .loading import DeployError, LoadedRun, load_run

__all__ = [
    "FORMATS",
    "INPUT_CONTRACT",
    "DeployModel",
    "ExportReport",
    "UnsupportedOperationError",
    "export",
    "format_export",
    "load_exported",
    "read_metadata",
]

REL_TOL = 1e-4


@dataclass
class ExportReport:
    """What :func:`export` wrote and measured."""

    path: str
    format: str
    quantize: str | None
    metadata: dict[str, Any]
    file_bytes: int
    original_bytes: int
    held_images: int
    max_abs_diff: float
    tolerance: float | None
    verified: bool
    latency_ms_original: float
    latency_ms_export: float
    latency_runs: int
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    accuracy_images: int | None = None
    top1_agreement: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- verifying


def _latency_ms(fn: Callable, x: torch.Tensor, runs: int) -> float:
    for _ in range(max(2, runs // 10)):
        fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _held_batch(run: LoadedRun, n: int) -> torch.Tensor:
    split = "test" if run.bundle.test is not None else "val" if run.bundle.val is not None else "train"
    return next(iter(run.batches(split, n, n)))[0].cpu()


def _weights_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def export(
    target: str | Path | LoadedRun,
    fmt: str = "onnx",
    *,
    out: str | Path | None = None,
    quantize: str | None = None,
    temperature: float | None | str = "auto",
    held_images: int = 32,
    accuracy_images: int = 1000,
    latency_runs: int = 50,
) -> ExportReport:
    """Write the run as one ``fmt`` file (see the module docs), verify it, measure it; the report.

    ``out`` defaults to ``RUN/export/model<suffix>`` (``model.int8<suffix>`` when quantized).
    ``temperature``: ``"auto"`` folds in the run's calibration when stored; a number; None: none.
    """
    if fmt not in FORMATS:
        raise DeployError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if latency_runs < 1:
        raise DeployError(
            f"--latency-runs must be at least 1 (batch-1 timings, the median shown), got {latency_runs}"
        )
    if quantize not in (None, "none", "dynamic"):
        raise DeployError(f"--quantize supports 'dynamic' only, got {quantize!r}")
    quantize = None if quantize in (None, "none") else quantize
    if quantize and fmt not in QUANTIZABLE:
        supported = "; ".join(f"{k}: {v}" for k, v in QUANTIZABLE.items())
        raise DeployError(f"dynamic quantization is not supported for {fmt}. Supported: {supported}")
    run = target if isinstance(target, LoadedRun) else load_run(target, device="cpu")
    if run.device.type != "cpu":
        raise DeployError("export runs on CPU: load the run with device='cpu'")
    if temperature == "auto":
        temperature = load_temperature(run.checkpoint)
    model = DeployModel(run.model, run.bundle.mean, run.bundle.std, temperature).eval()
    if out is None:
        base = run.run_dir if run.run_dir is not None else run.checkpoint.parent
        out = base / "export" / f"model{'.int8' if quantize else ''}{SUFFIXES[fmt]}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = export_metadata(run, temperature, fmt, quantize)
    write_export(run, model, fmt, quantize, out, meta)

    try:
        exported = load_exported(out, fmt)
    except Exception as e:  # noqa: BLE001 - e.g. onnxruntime lacking a kernel for an op
        raise UnsupportedOperationError(
            f"the {fmt} file was written to {out} but its runtime cannot load it: {operation_name(e)}"
        ) from e
    held = _held_batch(run, held_images)
    with torch.inference_mode():
        reference = model(held)
    got = exported(held).float()
    diff = float((got - reference).abs().max())
    tol = None if quantize else REL_TOL * (1.0 + float(reference.abs().max()))
    notes: list[str] = []
    report = ExportReport(
        path=str(out),
        format=fmt,
        quantize=quantize,
        metadata=meta,
        file_bytes=out.stat().st_size,
        original_bytes=_weights_bytes(run.model),
        held_images=int(held.shape[0]),
        max_abs_diff=diff,
        tolerance=tol,
        verified=True if tol is None else diff <= tol,
        latency_ms_original=0.0,
        latency_ms_export=0.0,
        latency_runs=latency_runs,
        notes=notes,
    )
    if quantize:
        split = "test" if run.bundle.test is not None else "val"
        correct_before = correct_after = agree = total = 0
        for x, y in run.batches(split, 256, accuracy_images):
            x, y = x.cpu(), torch.as_tensor(y).long().cpu()
            with torch.inference_mode():
                before = model(x).argmax(1)
            after = exported(x).argmax(1)
            correct_before += int((before == y).sum())
            correct_after += int((after == y).sum())
            agree += int((before == after).sum())
            total += int(y.numel())
        report.accuracy_before = correct_before / total
        report.accuracy_after = correct_after / total
        report.accuracy_images = total
        report.top1_agreement = agree / total
        notes.append(f"accuracy measured on the first {total} images of the {split} split")
    one = held[:1]
    with torch.inference_mode():
        report.latency_ms_original = _latency_ms(model, one, latency_runs)
    report.latency_ms_export = _latency_ms(exported, one, latency_runs)
    return report


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def format_export(r: ExportReport) -> str:
    """What ``patchswap export`` prints."""
    m = r.metadata
    lines = [
        f"wrote {r.path} ({r.format}{', dynamic int8' if r.quantize else ''})",
        f"input    {m['input_dtype']} {m['input_layout']} {m['input_shape']} ({m['channels']}, 0..255; "
        f"normalisation folded in); preprocess: {m['preprocess']}",
        f"output   {m['output']}",
        f"classes  {m['num_classes']}: {', '.join(m['classes'][:10])}"
        + (" ..." if m["num_classes"] > 10 else ""),
        "temperature " + (f"{m['temperature']:.4f}" if m["temperature"] else "none (not calibrated)"),
    ]
    check = f"max |logit diff| {r.max_abs_diff:.3g} on {r.held_images} held images " + (
        f"(tolerance {r.tolerance:.3g}): {'OK' if r.verified else 'FAILED'}" if r.tolerance else "(quantized)"
    )
    lines.append(f"verify   {check}")
    if r.accuracy_before is not None:
        lines.append(
            f"accuracy {100 * r.accuracy_before:.2f}% before, "
            f"{100 * (r.accuracy_after or 0):.2f}% after quantization "
            f"({r.accuracy_images} images; top-1 agreement {100 * (r.top1_agreement or 0):.2f}%)"
        )
    lines += [
        f"{'':<9}{'file size':>12} {'batch-1 CPU latency (median of ' + str(r.latency_runs) + ')':>40}",
        f"{'original':<9}{_size(r.original_bytes):>12} {r.latency_ms_original:>37.3f} ms",
        f"{'export':<9}{_size(r.file_bytes):>12} {r.latency_ms_export:>37.3f} ms",
    ]
    return "\n".join(lines)
