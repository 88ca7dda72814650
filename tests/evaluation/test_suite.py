"""The suite end to end: evaluate(..., suite=...), eval.json's stable layout, and the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from patchswap.cli import main
from patchswap.engine import evaluate
from patchswap.evaluation.corruptions import CORRUPTIONS
from patchswap.evaluation.images import ImageSource
from patchswap.evaluation.suite import run_suite
from patchswap.evaluation.suite_options import SuiteOptions

pytestmark = pytest.mark.usefixtures("single_thread")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def run_copy(tiny_run, tmp_path):
    """A copy of the tiny run, so the suite's files never land in the shared run directory."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run[0], dst)
    return dst


def test_suite_calibration_reproduces_the_runs_test_metrics(run_copy, tiny_run):
    summary = tiny_run[1]
    res = evaluate(run_copy, suite="calibration")
    cal = res["calibration"]
    assert cal["acc"] == pytest.approx(summary["test"]["acc"], abs=1e-7)
    assert cal["nll"] == pytest.approx(summary["test"]["nll"], rel=1e-5)
    assert cal["ece"] == pytest.approx(summary["test"]["ece"], abs=1e-5)
    assert res["images"] == 359 and res["split"] == "test"
    on_disk = json.loads((run_copy / "eval.json").read_text())
    assert on_disk["calibration"] == cal
    assert (run_copy / "reliability.png").read_bytes()[:8] == PNG
    # A later part is merged into the same eval.json.
    evaluate(run_copy, suite="fgsm", options=SuiteOptions(eps="0,0.01"))
    merged = json.loads((run_copy / "eval.json").read_text())
    assert merged["calibration"] == cal and set(merged["fgsm"]) == {"0", "0.01"}
    assert merged["settings"]["parts"] == ["calibration", "fgsm"]
    assert merged["fgsm"]["0"] == pytest.approx(cal["acc"], abs=1e-12)
    # The plain evaluation is unchanged.
    plain = evaluate(run_copy)
    assert set(plain) >= {"acc", "nll", "ece"} and plain["acc"] == pytest.approx(cal["acc"], abs=1e-7)


def test_run_suite_on_tensors(tiny_eval):
    source = ImageSource.from_tensors(tiny_eval.images, tiny_eval.labels, max_images=40, seed=1)
    opts = SuiteOptions(parts="all", eps="0,2/255", pgd_steps=3, corruptions="fog,contrast", severities="1,5")
    res = run_suite(
        tiny_eval.model, source, mean=tiny_eval.bundle.mean, std=tiny_eval.bundle.std, options=opts
    )
    assert res["images"] == 40
    c = res["corruptions"]
    assert set(c) == {"mean", "clean", "by_type", "by_severity", "table"}
    assert set(c["table"]) == {"fog", "contrast"} and set(c["table"]["fog"]) == {"1", "5"}
    assert c["mean"] == pytest.approx(sum(c["by_type"].values()) / 2)
    assert c["clean"] == res["calibration"]["acc"] == res["fgsm"]["0"] == res["pgd"]["0"]
    again = run_suite(
        tiny_eval.model, source, mean=tiny_eval.bundle.mean, std=tiny_eval.bundle.std, options=opts
    )
    assert again["corruptions"] == c and again["pgd"] == res["pgd"]  # seeded end to end
    # The subset is seeded too, and the same for every run.
    idx = ImageSource.from_tensors(tiny_eval.images, tiny_eval.labels, max_images=40, seed=1).indices
    assert torch.equal(idx, source.indices) and len(set(idx.tolist())) == 40


def test_cli_eval_suite_all_writes_every_file(run_copy, capsys):
    assert main(["eval", str(run_copy), "--suite", "all", "--max-images", "64"]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert "wrote" in captured.err
    for name in ("eval.json", "eval.md", "reliability.png", "adversarial.png", "corruptions.png"):
        assert (run_copy / name).is_file(), name
    for name in ("reliability.png", "adversarial.png", "corruptions.png"):
        assert (run_copy / name).read_bytes()[:8] == PNG
    data = json.loads((run_copy / "eval.json").read_text())
    assert data["images"] == res["images"] == 64
    # The stable, flat layout `patchswap compare` reads.
    assert set(data["calibration"]) == {"acc", "nll", "ece", "aurc", "eaurc", "brier"}
    keys = ["0", "0.00392157", "0.00784314", "0.01", "0.0156863", "0.0313725"]
    assert list(data["fgsm"]) == list(data["pgd"]) == keys
    assert list(data["corruptions"]["by_type"]) == list(CORRUPTIONS)
    assert list(data["corruptions"]["by_severity"]) == ["1", "2", "3", "4", "5"]
    assert all(0 <= v <= 1 for v in data["fgsm"].values())
    md = (run_copy / "eval.md").read_text()
    assert "## Calibration" in md and "| gaussian_noise |" in md and "PGD-10" in md


def test_cli_eval_val_split_and_errors(run_copy, capsys, tmp_path):
    out = tmp_path / "elsewhere"
    assert main(["eval", str(run_copy), "--split", "val", "--suite", "fgsm", "--eps", "0,1/255"]) == 0
    assert json.loads((run_copy / "eval-val" / "eval.json").read_text())["split"] == "val"
    assert not (run_copy / "eval.json").exists()
    ckpt = run_copy / "checkpoints" / "best.ckpt"
    assert main(["eval", str(ckpt), "--suite", "calibration", "--out", str(out)]) == 0
    assert (out / "eval.json").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit, match="only apply with --suite"):
        main(["eval", str(run_copy), "--eps", "0.01"])
    assert main(["eval", str(run_copy), "--suite", "fgsm,rain"]) == 2
    assert "unknown suite part" in capsys.readouterr().err
    assert main(["eval", str(run_copy), "--suite", "all", "--severities", "9"]) == 2
    assert "1..5" in capsys.readouterr().err
