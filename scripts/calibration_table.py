"""What `patchswap calibrate` did to every calibrated run of a study, as a table (mean +- std per entry).

Reads ``RUNS/<entry>/s<seed>/calibration.json`` (written by ``patchswap calibrate RUN``) and writes the
table to ``--out`` (default: ``RUNS/calibration.md``, beside compare's ``results.md``). From the
repository root, e.g.

    python scripts/calibration_table.py docs/results/finetune-cifar5/runs/study \
        --out docs/results/finetune-cifar5/calibration.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def cell(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def read_reports(runs: Path) -> dict[str, list[dict]]:
    """``entry -> [calibration.json of each calibrated seed]``, seeds in order."""
    rows: dict[str, list[dict]] = {}
    for path in sorted(runs.glob("*/s*/calibration.json")):
        rows.setdefault(path.parent.parent.name, []).append(json.loads(path.read_text()))
    return rows


def table(rows: dict[str, list[dict]]) -> list[str]:
    first = next(iter(rows.values()))[0]
    val_n, test_n = first["val"]["images"], first["test"]["images"]
    lines = [
        "# Temperature scaling of each run (`patchswap calibrate RUN`)",
        "",
        f"One temperature T per run, fitted on its validation split ({val_n:,} images) by minimising NLL;",
        f"test ({test_n:,} images) is measured before and after, never fitted on. Mean +- sample std over",
        "seeds.",
        "",
        "| entry | seeds | T | val NLL before -> after | val ECE % before -> after "
        "| test NLL before -> after | test ECE % before -> after |",
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
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="a study's runs folder: <entry>/s<seed>/calibration.json")
    ap.add_argument("--out", type=Path, default=None, help="default: RUNS/calibration.md")
    args = ap.parse_args()
    rows = read_reports(args.runs)
    if not rows:
        raise SystemExit(
            f"no {args.runs}/<entry>/s<seed>/calibration.json: run `patchswap calibrate RUN` first"
        )
    lines = table(rows)
    out = args.out or args.runs / "calibration.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
