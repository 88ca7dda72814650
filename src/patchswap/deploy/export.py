"""Export a trained run as one self-contained file: ONNX, TorchScript or a torch.export ExportedProgram.

Input contract (every format): **uint8 images, NCHW, 0..255**, with the run's channels (RGB, or
grayscale for 1-channel data) and its eval image size ``H x W`` -- the image already resized/cropped
as the metadata's ``preprocess`` says. The run's normalisation ``(x / 255 - mean) / std`` is folded
into the file, and so is the calibrated temperature when ``patchswap calibrate`` stored one: the
output is ``logits [N, K]`` whose softmax gives the (calibrated) class probabilities. The batch
dimension is dynamic.

Metadata (class names, input size and dtype, mean/std, temperature, preprocessing, source run) is in
ONNX ``metadata_props``, TorchScript ``_extra_files`` and ExportedProgram ``extra_files`` (under the
name ``patchswap.json`` for the latter two); :func:`read_metadata` reads any of them back.

After writing, :func:`export` verifies the file in its runtime (onnxruntime on CPU; the reloaded
TorchScript module; the reloaded ExportedProgram) against PyTorch on a held batch of the run's test
split (else val): max |logit difference| within ``tol = 1e-4 * (1 + max |logit|)``. A dynamically
quantized file (``quantize="dynamic"``; onnx: onnxruntime ``quantize_dynamic``, int8 weights of Conv,
MatMul/Gemm; torchscript: ``torch.ao`` int8 ``nn.Linear`` layers only; exported-program: not
supported) is checked by test accuracy before and after instead. File size and batch-1 CPU latency
(median) of the original and of the export are measured either way.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .calibrate import load_temperature
from .loading import DeployError, LoadedRun, load_run
from .predict import file_transform

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

FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}
QUANTIZABLE = {
    "onnx": "onnxruntime quantize_dynamic: int8 weights of Conv and MatMul/Gemm, activations per call",
    "torchscript": "torch.ao quantize_dynamic: int8 nn.Linear layers (convolutions stay float32)",
}
METADATA_FILE = "patchswap.json"
INPUT_CONTRACT = "uint8 NCHW, 0..255 (normalisation folded in)"
REL_TOL = 1e-4


class UnsupportedOperationError(DeployError):
    """The model uses an operation the chosen format cannot express."""


class DeployModel(nn.Module):
    """``uint8 [N, C, H, W]`` -> logits: the run's normalisation, the network, then ``/ T``.

    ``(x / 255 - mean) / std`` is folded into one multiply-add per channel.
    """

    def __init__(self, network: nn.Module, mean: Any, std: Any, temperature: float | None = None) -> None:
        super().__init__()
        self.network = network
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.as_tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)
        self.inv_temperature = 1.0 / float(temperature) if temperature else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x.to(torch.float32) * self.scale + self.shift)
        if self.inv_temperature != 1.0:
            logits = logits * self.inv_temperature
        return logits


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


# --------------------------------------------------------------------------- writing


def _metadata(run: LoadedRun, temperature: float | None, fmt: str, quantize: str | None) -> dict[str, Any]:
    from patchswap import __version__

    h, w = run.image_size
    return {
        "producer": f"patchswap {__version__}",
        "format": fmt,
        "classes": run.classes,
        "num_classes": len(run.classes),
        "input_name": "images",
        "input_dtype": "uint8",
        "input_range": "0..255",
        "input_layout": "NCHW",
        "input_shape": ["N", run.in_chans, h, w],
        "image_size": [h, w],
        "channels": "grayscale" if run.in_chans == 1 else "RGB",
        "preprocess": file_transform(run).describe,
        "normalization": {"mean": list(run.bundle.mean), "std": list(run.bundle.std), "folded_in": True},
        "temperature": temperature,
        "output": "logits [N, num_classes]"
        + (", already divided by the temperature" if temperature else "")
        + "; softmax gives class probabilities",
        "quantization": f"dynamic int8 ({QUANTIZABLE[fmt]})" if quantize else "none",
        "model": run.model_name,
        "method": run.method,
        "checkpoint": str(run.checkpoint),
    }


def _flat_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata_props are strings: JSON for lists and dicts, plus the whole record under one key."""
    out = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    out[METADATA_FILE] = json.dumps(meta)
    return out


_OP_PATTERNS = (
    r"No ONNX function found for <OpOverload\(op='([^']+)'",
    r"call_function\[target=([\w.:]+)\]",
    r"Unsupported: ([^\n]+)",
    r"(?:Could not find|unsupported) (?:an? )?(?:ONNX )?(?:operator|op|symbolic)[^\n]*?['`]([\w.:]+)['`]",
    r"aten::\w+",
)


def _operation(err: BaseException) -> str:
    """The operation an exporter's error names, else its first line."""
    text = ""
    e: BaseException | None = err
    while e is not None:  # the exporters wrap the real cause
        text += f"\n{e}"
        e = e.__cause__ or e.__context__
    for pattern in _OP_PATTERNS:
        m = re.search(pattern, text)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    first = str(err).strip().splitlines()
    return first[0][:200] if first else type(err).__name__


def _example(run: LoadedRun, n: int = 2) -> torch.Tensor:
    h, w = run.image_size
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, run.in_chans, h, w), dtype=torch.uint8, generator=gen)


@contextlib.contextmanager
def _quiet():
    """The exporters' deprecation notices and progress lines say nothing the user asked about."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization logs advice on the root logger
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _to_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    with _quiet():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def _to_torchscript(model: nn.Module, example: torch.Tensor) -> Any:
    with _quiet():
        return torch.jit.trace(model, example, check_trace=False)


def _to_exported_program(model: nn.Module, example: torch.Tensor) -> Any:
    batch = torch.export.Dim("batch", min=1, max=65536)
    with _quiet():
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def _probe(model: nn.Module, example: torch.Tensor, fmt: str) -> bool:
    """Whether ``model`` exports to ``fmt`` (in a scratch folder / in memory)."""
    try:
        if fmt == "onnx":
            with tempfile.TemporaryDirectory() as tmp:
                _to_onnx(model, example, Path(tmp) / "probe.onnx")
        elif fmt == "torchscript":
            _to_torchscript(model, example)
        else:
            _to_exported_program(model, example)
    except Exception:  # noqa: BLE001 - any failure means the format does not work here
        return False
    return True


def _unsupported(model: nn.Module, example: torch.Tensor, fmt: str, err: BaseException) -> DeployError:
    op = _operation(err)
    working = [f for f in FORMATS if f != fmt and _probe(model, example, f)]
    alternative = (
        f"formats that export this model: {', '.join(working)}"
        if working
        else "no other format exports it either"
    )
    return UnsupportedOperationError(
        f"{fmt} cannot express the operation {op!r} used by this model ({type(err).__name__}); {alternative}"
    )


def _write(
    run: LoadedRun, model: nn.Module, fmt: str, quantize: str | None, out: Path, meta: dict[str, Any]
) -> None:
    example = _example(run)
    if fmt == "onnx":
        import onnx

        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / "model.onnx"
            try:
                _to_onnx(model, example, plain)
            except Exception as e:  # noqa: BLE001 - translated into which op and which formats work
                raise _unsupported(model, example, fmt, e) from e
            source = plain
            if quantize:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                source = Path(tmp) / "model.int8.onnx"
                with _quiet():
                    quantize_dynamic(str(plain), str(source), weight_type=QuantType.QInt8)
            proto = onnx.load(str(source))
            onnx.helper.set_model_props(proto, _flat_metadata(meta))
            onnx.save(proto, str(out))
        return
    extra = {METADATA_FILE: json.dumps(meta)}
    if fmt == "torchscript":
        if quantize:
            with _quiet():
                model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        try:
            scripted = _to_torchscript(model, example)
        except Exception as e:  # noqa: BLE001
            raise _unsupported(model, example, fmt, e) from e
        with _quiet():
            torch.jit.save(scripted, str(out), _extra_files=extra)
        return
    try:
        program = _to_exported_program(model, example)
    except Exception as e:  # noqa: BLE001
        raise _unsupported(model, example, fmt, e) from e
    with _quiet():
        torch.export.save(program, str(out), extra_files=extra)


# --------------------------------------------------------------------------- reading


def load_exported(path: str | Path, fmt: str | None = None, *, threads: int | None = None) -> Callable:
    """A callable ``uint8 NCHW tensor -> logits tensor`` running the exported file in its runtime."""
    path = Path(path)
    fmt = fmt or _format_of(path)
    if fmt == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(session.run(None, {name: x.cpu().numpy()})[0]))

        return run_onnx
    with _quiet():
        if fmt == "torchscript":
            module = torch.jit.load(str(path), map_location="cpu")
        else:
            module = torch.export.load(str(path)).module()

    def run_torch(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x.cpu())

    return run_torch


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(".pt2"):
        return "exported-program"
    return "torchscript"


def read_metadata(path: str | Path, fmt: str | None = None) -> dict[str, Any]:
    """The patchswap metadata stored in an exported file (classes, input contract, temperature...)."""
    path = Path(path)
    fmt = fmt or _format_of(path)
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[METADATA_FILE])
    extra = {METADATA_FILE: ""}
    with _quiet():
        if fmt == "torchscript":
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        else:
            torch.export.load(str(path), extra_files=extra)
    return json.loads(extra[METADATA_FILE])


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
    meta = _metadata(run, temperature, fmt, quantize)
    _write(run, model, fmt, quantize, out, meta)

    try:
        exported = load_exported(out, fmt)
    except Exception as e:  # noqa: BLE001 - e.g. onnxruntime lacking a kernel for an op
        raise UnsupportedOperationError(
            f"the {fmt} file was written to {out} but its runtime cannot load it: {_operation(e)}"
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
