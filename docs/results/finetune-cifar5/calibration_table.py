"""calibration.md: what `patchswap calibrate` did to every finished run of the study (mean +- std per entry).

From the repository root: python docs/results/finetune-cifar5/calibration_table.py
"""

import json
import statistics
from pathlib import Path

STUDY = Path(__file__).parent / "runs" / "study"
rows: dict[str, list[dict]] = {}
for path in sorted(STUDY.glob("*/s*/calibration.json")):
    rows.setdefault(path.parent.parent.name, []).append(json.loads(path.read_text()))


def cell(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


lines = [
    "# Temperature scaling of each fine-tuned run (`patchswap calibrate RUN`)",
    "",
    "One temperature T per run, fitted on its validation split (500 images) by minimising NLL; test",
    "(5,000 images) is measured before and after, never fitted on. Mean +- sample std over seeds.",
    "",
    "| entry | seeds | T | val NLL before -> after | val ECE % before -> after | test NLL before -> after "
    "| test ECE % before -> after |",
    "|---|---|---|---|---|---|---|",
]
for entry, reports in sorted(rows.items()):
    v, t = [r["val"] for r in reports], [r["test"] for r in reports]
    lines.append(
        f"| {entry} | {len(reports)} | {cell([r['temperature'] for r in reports], digits=2)} "
        f"| {cell([s['nll_before'] for s in v])} -> {cell([s['nll_after'] for s in v])} "
        f"| {cell([s['ece_before'] for s in v], 100, 2)} -> {cell([s['ece_after'] for s in v], 100, 2)} "
        f"| {cell([s['nll_before'] for s in t])} -> {cell([s['nll_after'] for s in t])} "
        f"| {cell([s['ece_before'] for s in t], 100, 2)} -> {cell([s['ece_after'] for s in t], 100, 2)} |"
    )
lines.append("")
for entry, reports in sorted(rows.items()):
    per_seed = ", ".join(f"{r['temperature']:.3f}" for r in reports)
    lines.append(f"- {entry}: T per seed {per_seed}")
(STUDY.parent.parent / "calibration.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
