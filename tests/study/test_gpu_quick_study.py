"""scripts/gpu_quick_study.sh on its CPU path (CPU_SMOKE=1): every part runs and writes its file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_quick_study_cpu_smoke_writes_every_part(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 20)
    x = rng.integers(0, 256, size=(len(y), 8, 8, 3), dtype=np.uint8)
    data = tmp_path / "tiny.npz"
    np.savez(data, x=x, y=y, classes=np.array([f"c{i}" for i in range(10)]))
    out = tmp_path / "quick"
    env = {
        **os.environ,
        "CPU_SMOKE": "1",
        "PY": sys.executable,
        "OUTDIR": str(out),
        "DATA": str(data),
        "SEEDS": "0",
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("PATCHSWAP_FAULT_AT_STEP", None)
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_quick_study.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    bench = (out / "benchmark.md").read_text()
    assert "| cpu | resnet8 | 16 | fp32 | no |" in bench and "patchswap / plain" in bench
    parallel = (out / "parallel.md").read_text()
    assert "| 1 |" in parallel and "| 2 |" in parallel and "The study ran" in parallel
    results = (out / "results.md").read_text()
    for entry in ("ce", "ce-2x", "ips"):
        assert entry in results
        assert (out / entry / "s0" / "summary.json").is_file()
    machine = (out / "machine.md").read_text()
    assert "device: cpu" in machine and "wall time" in machine
