"""The benchmark that breaks an epoch's time down runs and accounts for what it says it times.

Benchmarks are not timed in tests; this only checks that the script still reaches the engine's parts
it wraps (it patches private methods of the direct step and of Lightning's loop, which can move).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _rows(text: str) -> dict[str, list[float]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[1][:1].isdigit():
            rows[cells[0]] = [float(c) for c in cells[1:]]
    return rows


def test_epoch_costs_times_every_part_once_per_step_or_epoch(subprocess_env):
    done = subprocess.run(
        [sys.executable, "epoch_costs.py", "--epochs", "3"],
        cwd=BENCHMARKS,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(done.stdout)
    steps = rows["the whole step"][1]  # calls per epoch
    assert steps == 44  # the digits' 1,440-odd training images in 32 pairs a step
    for name in ("backward", "training_step", "the model's forward", "the next batch"):
        assert rows[name][1] == steps, name
    assert rows["checkpoint writes (save_checkpoint, in the above)"][1] == 1  # one save: best is a link
    assert rows["LinkedCheckpoint.on_train_epoch_end"][1] == 1
    # Parts never exceed what holds them.
    assert rows["the model's forward"][0] < rows["training_step"][0] < rows["the whole step"][0]
    assert rows["the whole step"][0] <= rows["the training steps (fit loop advance)"][0]
