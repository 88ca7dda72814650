"""Temperature scaling: the fit, its effect on an over-confident model, and its storage in the run."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from patchswap.cli import main
from patchswap.deploy import (
    CALIBRATION_FILE,
    DeployError,
    calibrate,
    fit_temperature,
    load_calibration,
    load_run,
    load_temperature,
)


def test_fit_recovers_the_temperature_that_generated_the_labels():
    gen = torch.Generator().manual_seed(0)
    z = 2.0 * torch.randn(20000, 10, generator=gen, dtype=torch.float64)
    labels = torch.multinomial(z.softmax(1), 1, generator=gen).squeeze(1)
    t = fit_temperature(3.0 * z, labels)  # logits three times too sharp
    assert t == pytest.approx(3.0, rel=0.05)


def test_fit_is_the_minimum_of_the_nll():
    gen = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(500, 5, generator=gen)
    labels = torch.multinomial((logits / 2).softmax(1), 1, generator=gen).squeeze(1)
    t = fit_temperature(logits, labels)
    assert 1.0 < t < 4.0

    def nll(temp: float) -> float:
        return float(F.cross_entropy(logits.double() / temp, labels))

    assert nll(t) <= min(nll(t * 1.01), nll(t / 1.01))


def test_labels_the_logits_cannot_explain_push_the_temperature_to_its_bound():
    logits = torch.randn(300, 4, generator=torch.Generator().manual_seed(2))
    t = fit_temperature(logits, logits.argmin(1))  # always the least likely class: flatter is better
    assert t == pytest.approx(20.0, rel=1e-3)


def test_fit_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


class _Sharpen(nn.Module):
    def __init__(self, net: nn.Module, factor: float) -> None:
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.factor


def test_calibrate_lowers_val_nll_of_an_over_confident_model(loaded_run, deploy_run_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(deploy_run_dir, run_dir)
    run = dataclasses.replace(
        loaded_run,
        checkpoint=run_dir / "checkpoints" / loaded_run.checkpoint.name,
        run_dir=run_dir,
        model=_Sharpen(loaded_run.model, 8.0),
    )
    report = calibrate(run)
    plain_t = fit_temperature(*loaded_run.split_logits("val"))
    assert report.temperature > 1.0, "an over-confident model is cooled down"
    assert report.temperature == pytest.approx(8 * plain_t, rel=1e-3), "8x sharper logits need 8x the T"
    assert report.val.nll_after < report.val.nll_before
    assert report.val.ece_after < report.val.ece_before
    assert report.test is not None and report.test.images == len(run.bundle.test)
    assert report.val.images == len(run.bundle.val)
    # stored in the run, and read back for the run dir and for its checkpoint
    stored = json.loads((run_dir / CALIBRATION_FILE).read_text())
    assert stored["temperature"] == report.temperature and stored["fitted_on"] == "val"
    assert load_temperature(run_dir) == pytest.approx(report.temperature)
    assert load_temperature(run.checkpoint) == pytest.approx(report.temperature)
    # another checkpoint of the run, or a rewritten one, does not take it
    assert load_temperature(run_dir / "checkpoints" / "last.ckpt") is None
    with open(run.checkpoint, "ab") as f:
        f.write(b"\0")
    assert load_calibration(run_dir) is None and load_temperature(run_dir) is None


def test_calibrate_from_the_command_line_prints_the_table(deploy_run_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(deploy_run_dir, run_dir)
    assert load_temperature(run_dir) is None
    assert main(["calibrate", str(run_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "temperature" in out and "NLL before" in out and "ECE after" in out
    assert out.count("\nval ") == 1 and out.count("\ntest ") == 1
    t = load_temperature(run_dir)
    assert t is not None and math.isfinite(t) and f"{t:.4f}" in out


def test_calibrate_needs_a_validation_split(loaded_run):
    bundle = dataclasses.replace(loaded_run.bundle, val=None)
    with pytest.raises(DeployError, match="validation split"):
        calibrate(dataclasses.replace(loaded_run, bundle=bundle), write=False)


def test_a_run_dir_without_checkpoints_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="not a patchswap run directory"):
        load_run(tmp_path)


def test_eval_applies_the_calibrated_temperature(deploy_run_dir, tmp_path):
    from patchswap.engine import evaluate

    run_dir = tmp_path / "run"
    shutil.copytree(deploy_run_dir, run_dir)
    plain = evaluate(run_dir, split="val")
    assert plain["temperature"] is None
    report = calibrate(load_run(run_dir, device="cpu"))
    calibrated = evaluate(run_dir, split="val")
    assert calibrated["temperature"] == pytest.approx(report.temperature)
    assert calibrated["acc"] == pytest.approx(plain["acc"]), "a temperature never changes the argmax"
    assert calibrated["nll"] == pytest.approx(report.val.nll_after, rel=1e-3)
    assert plain["nll"] == pytest.approx(report.val.nll_before, rel=1e-3)
