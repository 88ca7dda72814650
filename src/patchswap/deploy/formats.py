"""The exported file itself: the deploy model, the formats, their metadata, loading a file back.

Input contract (every format): **uint8 images, NCHW, 0..255**, with the run's channels (RGB, or
grayscale for 1-channel data) and its eval image size ``H x W`` -- the image already resized/cropped
as the metadata's ``preprocess`` says. The run's normalisation ``(x / 255 - mean) / std`` is folded
into the file (:class:`DeployModel`), and so is the calibrated temperature when ``patchswap calibrate``
stored one: the output is ``logits [N, K]`` whose softmax gives the (calibrated) class probabilities.
The batch dimension is dynamic.

Metadata (class names, input size and dtype, mean/std, temperature, preprocessing, source run) is in
ONNX ``metadata_props``, TorchScript ``_extra_files`` and ExportedProgram ``extra_files`` (under the
name ``patchswap.json`` for the latter two); :func:`read_metadata` reads any of them back and
:func:`load_exported` runs a file in its runtime. :func:`write_export` writes one format (dynamically
quantized on request: onnx through onnxruntime ``quantize_dynamic``, torchscript through ``torch.ao``)
and names the operation a format cannot express, with the formats that do export the model.
:func:`patchswap.deploy.export.export` drives it, verifies and measures the result.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .loading import DeployError, LoadedRun
from .predict import file_transform

__all__ = [
    "FORMATS",
    "INPUT_CONTRACT",
    "METADATA_FILE",
    "QUANTIZABLE",
    "SUFFIXES",
    "DeployModel",
    "UnsupportedOperationError",
    "export_metadata",
    "load_exported",
    "operation_name",
    "read_metadata",
    "write_export",
]

FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}
QUANTIZABLE = {
    "onnx": "onnxruntime quantize_dynamic: int8 weights of Conv and MatMul/Gemm, activations per call",
    "torchscript": "torch.ao quantize_dynamic: int8 nn.Linear layers (convolutions stay float32)",
}
METADATA_FILE = "patchswap.json"
INPUT_CONTRACT = "uint8 NCHW, 0..255 (normalisation folded in)"


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


# --------------------------------------------------------------------------- writing


def export_metadata(
    run: LoadedRun, temperature: float | None, fmt: str, quantize: str | None
) -> dict[str, Any]:
    """The record stored in the file: classes, input contract, normalisation, temperature, source run."""
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


def operation_name(err: BaseException) -> str:
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
    op = operation_name(err)
    working = [f for f in FORMATS if f != fmt and _probe(model, example, f)]
    alternative = (
        f"formats that export this model: {', '.join(working)}"
        if working
        else "no other format exports it either"
    )
    return UnsupportedOperationError(
        f"{fmt} cannot express the operation {op!r} used by this model ({type(err).__name__}); {alternative}"
    )


def write_export(
    run: LoadedRun, model: nn.Module, fmt: str, quantize: str | None, out: Path, meta: dict[str, Any]
) -> None:
    """Write ``model`` to ``out`` as ``fmt`` with ``meta``; raise :class:`UnsupportedOperationError`
    naming the operation a format cannot express."""
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
