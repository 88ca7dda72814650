"""The tables and the plot of a ``patchswap compare`` study: results.csv, results.md, results.png.

``results.csv`` has one row per finished run; ``results.md`` the mean +- std per entry, ranked by
validation accuracy (the test column is reported, never used to choose), the evaluation suite's
headline numbers where runs were evaluated, and, with a ``reference`` entry, each entry's per-seed
difference to it.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from patchswap.evaluation.plots import pyplot, save_figure
from patchswap.study.compare import Study

__all__ = ["METRICS", "collect", "paired_differences", "write_report"]

# Columns of results.csv, taken from each run's summary.json (and eval.json where present).
METRICS = [
    ("val_acc", ("val", "acc")),
    ("test_acc", ("test", "acc")),
    ("val_nll", ("val", "nll")),
    ("test_nll", ("test", "nll")),
    ("val_ece", ("val", "ece")),
    ("test_ece", ("test", "ece")),
    ("train_seconds", ("train_seconds",)),
    ("images_per_s", ("train_images_per_s",)),
    ("images_seen", ("images_seen",)),
    ("best_epoch", ("best_epoch",)),
]


def _get(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def collect(study: Study) -> list[dict[str, Any]]:
    """One row per finished run: entry, seed and the METRICS columns (plus eval.json numbers)."""
    rows = []
    for spec in study.runs():
        summary_path = spec.run_dir / "summary.json"
        if not summary_path.exists():
            continue
        summary = json.loads(summary_path.read_text())
        row: dict[str, Any] = {"entry": spec.entry, "seed": spec.seed}
        score = str(summary.get("selected_on", "val/acc")).split("/")[-1]
        if score != "acc":  # transfer runs: mIoU or mAP take the accuracy columns' place
            row["score"] = score
            summary = {**summary, "val": {**summary["val"], "acc": summary["val"].get(score)}}
            summary["test"] = {**summary["test"], "acc": summary["test"].get(score)}
        for column, keys in METRICS:
            row[column] = _get(summary, keys)
        eval_path = spec.run_dir / "eval.json"
        if eval_path.exists():
            for key, value in _flatten_numbers(json.loads(eval_path.read_text())).items():
                row[f"eval/{key}"] = value
        rows.append(row)
    return rows


def _flatten_numbers(d: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten_numbers(v, f"{prefix}{k}/" if prefix or k else k))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix.rstrip("/")] = float(d)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def _pm(m: float, sd: float, n: int, scale: float, digits: int) -> str:
    """``mean +- std``; a single run has no spread to show, so it is its value alone."""
    if n < 2:
        return f"{scale * m:.{digits}f}"
    return f"{scale * m:.{digits}f} +- {scale * sd:.{digits}f}"


# Columns of the evaluation-suite table (from each run's eval.json, when `patchswap eval --suite` ran).
SUITE_COLUMNS = [
    ("eval/calibration/acc", "clean acc"),
    ("eval/calibration/nll", "NLL"),
    ("eval/calibration/ece", "ECE"),
    ("eval/fgsm/0.00392157", "FGSM 1/255"),
    ("eval/fgsm/0.01", "FGSM 0.01"),
    ("eval/pgd/0.00392157", "PGD-10 1/255"),
    ("eval/corruptions/mean", "corruptions (mean)"),
]


def _suite_table(study: Study, rows: list[dict[str, Any]], ranked: list[str]) -> list[str]:
    """Mean +- std of the evaluation suite's headline numbers, for entries whose runs were evaluated."""
    present = [(key, name) for key, name in SUITE_COLUMNS if any(r.get(key) is not None for r in rows)]
    if not present:
        return []
    images = sorted({int(r["eval/images"]) for r in rows if r.get("eval/images") is not None})
    lines = [
        "",
        "Evaluation suite (`patchswap eval RUN --suite all`; test split, "
        f"{', '.join(map(str, images))} images; accuracies and ECE in %):",
        "",
        "| entry | runs | " + " | ".join(name for _, name in present) + " |",
        "|---|---|" + "---|" * len(present),
    ]
    for entry in ranked:
        mine = [r for r in rows if r["entry"] == entry and any(r.get(k) is not None for k, _ in present)]
        if not mine:
            continue
        cells = []
        for key, name in present:
            vals = [float(r[key]) for r in mine if r.get(key) is not None]
            scale, digits = (1.0, 4) if name == "NLL" else (100.0, 2)
            if vals:
                cells.append(_pm(*_mean_std(vals), len(vals), scale, digits))
            else:
                cells.append("-")
        lines.append(f"| {entry} | {len(mine)} | " + " | ".join(cells) + " |")
    return lines


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (then the normal's 1.96).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)  # fmt: skip


def t_interval(diffs: list[float]) -> tuple[float, float, float | None]:
    """Mean, sample std and the half-width of the two-sided 95% interval (Student's t) of paired
    differences; the half-width is None for a single difference."""
    m, sd = _mean_std(diffs)
    if len(diffs) < 2:
        return m, sd, None
    dof = len(diffs) - 1
    return m, sd, (_T95[dof - 1] if dof <= len(_T95) else 1.96) * sd / math.sqrt(len(diffs))


def paired_differences(rows: list[dict[str, Any]], entry: str, reference: str, column: str) -> list[float]:
    """``entry - reference`` in ``column``, seed by seed, over the seeds both have finished.

    Runs of one seed share the initial weights (of the same model) and the splits, so the per-seed
    difference cancels part of the seed-to-seed spread that the unpaired mean +- std carries.
    """
    ref = {r["seed"]: r.get(column) for r in rows if r["entry"] == reference}
    return [
        float(r[column]) - float(ref[r["seed"]])
        for r in sorted(rows, key=lambda r: r["seed"])
        if r["entry"] == entry and r.get(column) is not None and ref.get(r["seed"]) is not None
    ]


def _paired_table(rows: list[dict[str, Any]], ranked: list[str], label: str, reference: str) -> list[str]:
    lines = [
        "",
        f"Paired with `{reference}` by seed (runs of one seed start from the same weights of the same "
        f"model, whatever the method, and share the splits): the per-seed difference in {label} points, "
        "mean +- std, its 95% confidence interval (Student's t), and in how many seeds the entry is ahead.",
        "",
        "| entry | seeds | val diff | val 95% CI | ahead on val | test diff | test 95% CI | ahead on test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in ranked:
        if entry == reference:
            continue
        cells, n = [], 0
        for column in ("val_acc", "test_acc"):
            diffs = [100 * d for d in paired_differences(rows, entry, reference, column)]
            n = max(n, len(diffs))
            if not diffs:
                cells += ["-", "-", "-"]
                continue
            m, sd, half = t_interval(diffs)
            ci = "-" if half is None else f"[{m - half:+.2f}, {m + half:+.2f}]"
            cells += [_pm(m, sd, len(diffs), 1.0, 2), ci, f"{sum(d > 0 for d in diffs)}/{len(diffs)}"]
        if n:
            lines.append(f"| {entry} | {n} | " + " | ".join(cells) + " |")
    return lines


def write_report(study: Study, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """results.csv, results.md (mean +- std per entry, ranked by val accuracy) and results.png."""
    out = study.out
    out.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys or ["entry", "seed"])
        writer.writeheader()
        writer.writerows(rows)

    stats: dict[str, dict[str, tuple[float, float, int]]] = {}
    for name in study.entries:
        mine = [r for r in rows if r["entry"] == name]
        stats[name] = {}
        for column, _ in METRICS:
            vals = [float(r[column]) for r in mine if r.get(column) is not None]
            if vals:
                stats[name][column] = (*_mean_std(vals), len(vals))
    ranked = sorted(stats, key=lambda n: -stats[n].get("val_acc", (float("-inf"), 0, 0))[0])
    score = next((str(r["score"]) for r in rows if r.get("score")), "acc")
    label = {"acc": "acc", "miou": "mIoU", "map": "mAP"}.get(score, score)

    def cell(name: str, column: str, scale: float = 1.0, digits: int = 2) -> str:
        if column not in stats[name]:
            return "-"
        return _pm(*stats[name][column], scale, digits)

    lines = [
        f"# {study.path.stem if study.path.exists() else study.out.name}",
        "",
        f"Seeds {study.seeds}; mean +- sample std over finished seeds (one run: its value). "
        f"Ranked by validation {label} (the test split is reported, never used to choose).",
        "",
        f"| entry | runs | val {label} (%) | test {label} (%) | test NLL | test ECE (%) | train s | images/s "
        "| images seen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ranked:
        n = stats[name].get("val_acc", stats[name].get("test_acc", (0, 0, 0)))[2]
        lines.append(
            f"| {name} | {n} | {cell(name, 'val_acc', 100)} | {cell(name, 'test_acc', 100)} "
            f"| {cell(name, 'test_nll', 1, 4)} | {cell(name, 'test_ece', 100)} "
            f"| {cell(name, 'train_seconds', 1, 1)} "
            f"| {cell(name, 'images_per_s', 1, 0)} | {cell(name, 'images_seen', 1, 0)} |"
        )
    for reference in study.references:
        lines += _paired_table(rows, ranked, label, reference)
    lines += _suite_table(study, rows, ranked)
    lines += ["", "Overrides per entry:", ""]
    lines += [f"- `{name}`: `{study.entries[name]}`" for name in study.entries]
    (out / "results.md").write_text("\n".join(lines) + "\n")

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(ranked) + 2), 3.8))
    xs = range(len(ranked))
    for offset, column, label in ((-0.2, "val_acc", "val"), (0.2, "test_acc", "test")):
        means = [100 * stats[n].get(column, (math.nan, 0, 0))[0] for n in ranked]
        errs = [100 * stats[n].get(column, (0, 0, 0))[1] for n in ranked]
        ax.bar([x + offset for x in xs], means, width=0.4, yerr=errs, capsize=3, label=label)
    ax.set_xticks(list(xs), ranked, rotation=30, ha="right")
    ax.set_ylabel(f"{label} (%)" if score != "acc" else "accuracy (%)")
    vals = [100 * stats[n][c][0] for n in ranked for c in ("val_acc", "test_acc") if c in stats[n]]
    if vals:
        ax.set_ylim(max(0, min(vals) - 5), min(100, max(vals) + 3))
    ax.legend()
    ax.set_title(f"{study.path.stem if study.path.exists() else study.out.name}: mean +- std over seeds")
    save_figure(fig, out / "results.png")
    return {"csv": out / "results.csv", "md": out / "results.md", "png": out / "results.png"}
