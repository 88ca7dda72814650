"""scripts/calibration_table.py: per-entry means of what `patchswap calibrate` wrote, by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "calibration_table.py"


def _report(t: float, ece_before: float, ece_after: float) -> dict:
    split = {"images": 100, "acc": 0.5, "nll_before": 1.0, "nll_after": 0.8}
    return {
        "temperature": t,
        "val": {**split, "ece_before": ece_before, "ece_after": ece_after},
        "test": {**split, "images": 200, "ece_before": ece_before, "ece_after": ece_after},
    }


def test_table_has_one_row_per_entry_with_mean_and_std_over_seeds(tmp_path):
    runs = tmp_path / "runs"
    for entry, seed, report in [
        ("ips", 0, _report(2.0, 0.2, 0.02)),
        ("ips", 1, _report(4.0, 0.3, 0.04)),
        ("ce", 0, _report(1.5, 0.1, 0.05)),
    ]:
        (runs / entry / f"s{seed}").mkdir(parents=True)
        (runs / entry / f"s{seed}" / "calibration.json").write_text(json.dumps(report))
    subprocess.run([sys.executable, str(SCRIPT), str(runs)], check=True, capture_output=True)
    text = (runs / "calibration.md").read_text()
    assert "validation split (100 images)" in text and "test (200 images)" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    # ips: T mean 3.00, std 1.41; val ECE 25.00 +- 7.07 -> 3.00 +- 1.41 (in %)
    assert "| ips | 2 | 3.00 +- 1.41 |" in rows["ips"] and "25.00 +- 7.07 -> 3.00 +- 1.41" in rows["ips"]
    assert "| ce | 1 | 1.50 |" in rows["ce"] and "10.00 -> 5.00" in rows["ce"]
    assert "- ips: T per seed 2.000, 4.000" in text


def test_no_calibrated_run_says_what_to_run(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "patchswap calibrate RUN" in proc.stderr


def test_reference_pairs_nll_after_temperature_by_seed(tmp_path):
    runs = tmp_path / "runs"

    def write(entry: str, seed: int, val_after: float, test_after: float) -> None:
        report = _report(1.0, 0.1, 0.01)
        report["val"]["nll_after"], report["test"]["nll_after"] = val_after, test_after
        (runs / entry / f"s{seed}").mkdir(parents=True)
        (runs / entry / f"s{seed}" / "calibration.json").write_text(json.dumps(report))

    write("ce", 0, 0.85, 0.90)
    write("ce", 1, 1.00, 0.90)
    write("ce", 2, 0.50, 0.50)  # no ips run of seed 2: not paired
    write("ips", 0, 0.80, 0.95)
    write("ips", 1, 0.92, 0.95)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(runs), "--reference", "ce"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "Paired with `ce` by seed" in proc.stdout
    # val: -0.05, -0.08 -> mean -0.065, std 0.0212, half-width 12.706 * 0.0212 / sqrt(2) = 0.1906
    # test: +0.05, +0.05 -> +0.05, std 0, interval [+0.05, +0.05], lower in no seed
    paired = proc.stdout.split("Paired with `ce` by seed")[1]
    row = next(line for line in paired.splitlines() if line.startswith("| ips | 2 |"))
    assert "| -0.0650 +- 0.0212 | [-0.2556, +0.1256] | 2/2 |" in row
    assert "| +0.0500 +- 0.0000 | [+0.0500, +0.0500] | 0/2 |" in row
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), str(runs), "--reference", "pskd"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "no calibrated runs of it (entries: ce, ips)" in bad.stderr
