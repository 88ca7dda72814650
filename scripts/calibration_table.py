"""What `patchswap calibrate` did to every calibrated run of a study, as a table (mean +- std per entry).

Reads ``RUNS/<entry>/s<seed>/calibration.json`` (written by ``patchswap calibrate RUN``) and writes the
table to ``--out`` (default: ``RUNS/calibration.md``, beside compare's ``results.md``). From the
repository root, e.g.

    python scripts/calibration_table.py docs/results/finetune-cifar5/runs/study \
        --out docs/results/finetune-cifar5/calibration.md

``--reference ENTRY`` (repeatable) adds a table of every other entry's per-seed difference to it in
NLL after each run's own temperature, on val and on test (mean +- std, 95% interval by Student's t,
seeds lower): which entry gives the better probabilities once every run is calibrated.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from patchswap.study.report import t_interval


def cell(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def read_reports(runs: Path) -> dict[str, list[dict]]:
    """``entry -> [calibration.json of each calibrated seed]``, seeds in order (each with its ``seed``)."""
    rows: dict[str, list[dict]] = {}
    paths = sorted(runs.glob("*/s*/calibration.json"), key=lambda p: (p.parent.parent.name, _seed(p)))
    for path in paths:
        rows.setdefault(path.parent.parent.name, []).append(
            {**json.loads(path.read_text()), "seed": _seed(path)}
        )
    return rows


def _seed(path: Path) -> int:
    return int(path.parent.name.removeprefix("s"))


def paired_table(rows: dict[str, list[dict]], reference: str) -> list[str]:
    """Every entry minus ``reference`` in NLL after temperature scaling, seed by seed."""
    ref = {r["seed"]: r for r in rows[reference]}
    lines = [
        "",
        f"Paired with `{reference}` by seed, both after their own temperature: the per-seed difference in "
        "NLL, mean +- std, its 95% interval (Student's t), and in how many seeds the entry's NLL is lower.",
        "",
        "| entry | seeds | val NLL diff | val 95% CI | lower on val "
        "| test NLL diff | test 95% CI | lower on test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry, reports in sorted(rows.items()):
        mine = [r for r in reports if r["seed"] in ref]
        if entry == reference or not mine:
            continue
        cells = []
        for split in ("val", "test"):
            diffs = [r[split]["nll_after"] - ref[r["seed"]][split]["nll_after"] for r in mine]
            m, sd, half = t_interval(diffs)
            ci = "-" if half is None else f"[{m - half:+.4f}, {m + half:+.4f}]"
            spread = f"{m:+.4f}" if len(diffs) == 1 else f"{m:+.4f} +- {sd:.4f}"
            cells += [spread, ci, f"{sum(d < 0 for d in diffs)}/{len(diffs)}"]
        lines.append(f"| {entry} | {len(mine)} | " + " | ".join(cells) + " |")
    return lines


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
    ap.add_argument("--reference", action="append", default=[], help="entry to pair the others with")
    args = ap.parse_args()
    rows = read_reports(args.runs)
    if not rows:
        raise SystemExit(
            f"no {args.runs}/<entry>/s<seed>/calibration.json: run `patchswap calibrate RUN` first"
        )
    unknown = [r for r in args.reference if r not in rows]
    if unknown:
        raise SystemExit(
            f"--reference {unknown[0]}: no calibrated runs of it (entries: {', '.join(sorted(rows))})"
        )
    lines = table(rows)
    for reference in args.reference:
        lines += paired_table(rows, reference)
    out = args.out or args.runs / "calibration.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
