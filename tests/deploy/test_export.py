"""export: one file per format with the normalisation folded in, verified in its runtime."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from patchswap.cli import main
from patchswap.deploy import (
    DeployError,
    DeployModel,
    UnsupportedOperationError,
    export,
    load_exported,
    read_metadata,
)

pytest.importorskip("onnxruntime")


def test_the_deploy_model_is_the_runs_eval_pipeline(loaded_run):
    x = loaded_run.bundle.test.images[:16]
    model = DeployModel(loaded_run.model, loaded_run.bundle.mean, loaded_run.bundle.std).eval()
    with torch.inference_mode():
        assert torch.allclose(model(x), loaded_run.logits(x), atol=1e-5)
        assert torch.allclose(
            DeployModel(loaded_run.model, loaded_run.bundle.mean, loaded_run.bundle.std, 2.0)(x),
            model(x) / 2,
            atol=1e-6,
        )


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported-program"])
def test_export_round_trip_matches_pytorch_and_carries_metadata(loaded_run, tmp_path, fmt):
    out = tmp_path / f"model.{fmt}"
    report = export(loaded_run, fmt, out=out, temperature=None, latency_runs=3)
    assert report.verified and report.max_abs_diff <= report.tolerance
    with torch.inference_mode():
        held = DeployModel(loaded_run.model, loaded_run.bundle.mean, loaded_run.bundle.std)(
            loaded_run.bundle.test.images[: report.held_images]
        )
    assert report.tolerance == pytest.approx(1e-4 * (1 + float(held.abs().max())))
    assert report.file_bytes == out.stat().st_size > 0 and report.original_bytes > 0
    assert report.latency_ms_original > 0 and report.latency_ms_export > 0
    meta = read_metadata(out, fmt)
    assert meta["classes"] == loaded_run.classes
    assert meta["input_dtype"] == "uint8" and meta["input_shape"] == ["N", 1, 8, 8]
    assert meta["image_size"] == [8, 8] and meta["temperature"] is None
    # reloaded on a batch size it was not traced with (dynamic batch)
    x = loaded_run.bundle.test.images[:5]
    got = load_exported(out, fmt)(x)
    want = DeployModel(loaded_run.model, loaded_run.bundle.mean, loaded_run.bundle.std).eval()(x)
    assert torch.allclose(got.float(), want.detach(), atol=1e-4)


def test_onnx_metadata_props_are_plain_strings(loaded_run, tmp_path):
    import onnx

    out = tmp_path / "m.onnx"
    export(loaded_run, "onnx", out=out, temperature=1.5, latency_runs=2)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["classes"].startswith("[") and props["input_dtype"] == "uint8"
    assert float(props["temperature"]) == 1.5 and "8, 8" in props["image_size"]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_quantized_export_reports_accuracy_before_and_after(loaded_run, tmp_path, fmt):
    report = export(loaded_run, fmt, out=tmp_path / f"q.{fmt}", quantize="dynamic", latency_runs=2)
    assert report.quantize == "dynamic" and report.tolerance is None and report.verified
    assert report.accuracy_images == len(loaded_run.bundle.test)
    assert 0 <= report.accuracy_before <= 1 and 0 <= report.accuracy_after <= 1
    assert abs(report.accuracy_before - report.accuracy_after) < 0.1
    assert report.top1_agreement > 0.8
    assert "dynamic int8" in read_metadata(report.path, fmt)["quantization"]


def test_exported_program_refuses_quantization_and_says_what_works(loaded_run, tmp_path):
    with pytest.raises(DeployError, match="onnx.*torchscript"):
        export(loaded_run, "exported-program", out=tmp_path / "x.pt2", quantize="dynamic")


def test_latency_runs_below_one_are_refused_before_anything_is_written(loaded_run, tmp_path):
    with pytest.raises(DeployError, match="--latency-runs must be at least 1"):
        export(loaded_run, "onnx", out=tmp_path / "x.onnx", latency_runs=0)
    assert not (tmp_path / "x.onnx").exists()


@torch.library.custom_op("patchswap_deploy_test::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_twice.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _WithCustomOp(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _twice(self.net(x))


def test_an_operation_onnx_cannot_express_is_named_with_the_formats_that_work(loaded_run, tmp_path):
    run = dataclasses.replace(loaded_run, model=_WithCustomOp(loaded_run.model))
    with pytest.raises(UnsupportedOperationError) as err:
        export(run, "onnx", out=tmp_path / "bad.onnx", latency_runs=2)
    text = str(err.value)
    assert "patchswap_deploy_test.twice" in text
    assert "torchscript" in text and "exported-program" in text
    # and those formats do export it
    report = export(run, "exported-program", out=tmp_path / "ok.pt2", latency_runs=2)
    assert report.verified


def test_export_from_the_command_line(deploy_run_dir, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    args = ["export", str(deploy_run_dir), "--format", "onnx", "--out", str(out), "--latency-runs", "3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert out.exists() and "max |logit diff|" in text and "OK" in text and "latency" in text
    assert main(["export", str(deploy_run_dir), "--format", "exported-program", "--quantize", "dynamic"]) == 2
    assert "not supported for exported-program" in capsys.readouterr().err
