"""The evaluation suite's reports: ``eval.json`` (merged with an earlier run of the same evaluation),
``eval.md`` and the plots ``reliability.png``, ``adversarial.png`` and ``corruptions.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .calibration import ReliabilityBins, plot_reliability
from .plots import pyplot, save_figure
from .suite_options import PARTS

__all__ = ["REPORT_FILES", "plot_adversarial", "plot_corruptions", "render_markdown", "write_reports"]

REPORT_FILES = {
    "json": "eval.json",
    "md": "eval.md",
    "reliability": "reliability.png",
    "adversarial": "adversarial.png",
    "corruptions": "corruptions.png",
}


def _merge(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Keep earlier parts when the new run evaluated the same checkpoint, split, images and seed."""
    same = all(previous.get(k) == new.get(k) for k in ("checkpoint", "split", "images", "seed"))
    same = same and previous.get("settings", {}).get("max_images") == new["settings"].get("max_images")
    if not same:
        return new
    merged = dict(previous)
    for key, value in new.items():
        if key in ("settings", "seconds") and isinstance(previous.get(key), dict):
            merged[key] = {**previous[key], **value}
        else:
            merged[key] = value
    merged["settings"]["parts"] = [p for p in PARTS if p in merged]
    return merged


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def render_markdown(result: dict[str, Any]) -> str:
    """The results as markdown tables (what ``eval.md`` holds)."""
    s = result.get("settings", {})
    lines = [
        f"# Evaluation of `{result.get('checkpoint', 'model')}`",
        "",
        f"Split **{result.get('split', '?')}**, {result['images']:,} images"
        + (f" (seeded subset, --max-images {s['max_images']})" if s.get("max_images") else "")
        + f", seed {result.get('seed', 0)}. Data: {result.get('data', '-')}",
        "",
    ]
    if "calibration" in result:
        c = result["calibration"]
        lines += [
            "## Calibration",
            "",
            "| accuracy | NLL | ECE (15 bins) | AURC (x1000) | E-AURC (x1000) | Brier |",
            "|---|---|---|---|---|---|",
            f"| {_pct(c['acc'])} | {c['nll']:.4f} | {_pct(c['ece'])} | {1000 * c['aurc']:.2f} | "
            f"{1000 * c['eaurc']:.2f} | {c['brier']:.4f} |",
            "",
            f"![reliability diagram]({REPORT_FILES['reliability']})",
            "",
        ]
    attacks = [p for p in ("fgsm", "pgd") if p in result]
    if attacks:
        keys = sorted({k for p in attacks for k in result[p]}, key=float)
        head = " | ".join({"fgsm": "FGSM", "pgd": f"PGD-{s.get('pgd_steps', '?')}"}[p] for p in attacks)
        lines += [
            "## Adversarial accuracy (L-inf, eps in [0, 1] pixel units, before normalisation)",
            "",
            f"| eps | eps x 255 | {head} |",
            "|---|---|" + "---|" * len(attacks),
        ]
        for k in keys:
            cells = " | ".join(_pct(result[p][k]) if k in result[p] else "-" for p in attacks)
            lines.append(f"| {k} | {255 * float(k):.2f} | {cells} |")
        lines += [
            "",
            f"PGD: random start, step {s.get('pgd_step_size', '2.5*eps/k')}; robust accuracy (an image "
            "broken at a smaller eps counts as broken).",
            "",
            f"![accuracy vs eps]({REPORT_FILES['adversarial']})",
            "",
        ]
    if "corruptions" in result:
        c = result["corruptions"]
        sevs = list(c["by_severity"])
        lines += [
            "## Common corruptions (CIFAR-10-C types, generated locally)",
            "",
            f"Mean corruption accuracy **{_pct(c['mean'])}** (clean accuracy on the same images "
            f"{_pct(c['clean'])}).",
            "",
            "| type | " + " | ".join(f"sev {v}" for v in sevs) + " | mean |",
            "|---|" + "---|" * (len(sevs) + 1),
        ]
        for name, row in c["table"].items():
            lines.append(
                f"| {name} | " + " | ".join(_pct(row[v]) for v in sevs) + f" | {_pct(c['by_type'][name])} |"
            )
        lines.append(
            "| **mean** | "
            + " | ".join(_pct(c["by_severity"][v]) for v in sevs)
            + f" | **{_pct(c['mean'])}** |"
        )
        lines += ["", f"![accuracy vs severity]({REPORT_FILES['corruptions']})", ""]
    secs = result.get("seconds", {})
    if secs:
        lines.append("Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in secs.items()) + ".")
    return "\n".join(lines) + "\n"


def plot_adversarial(result: dict[str, Any], out_png: str | Path, title: str = "") -> Path:
    """Accuracy vs eps (in grey levels, eps x 255) for FGSM and PGD."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for part, label, marker in (
        ("fgsm", "FGSM", "o"),
        ("pgd", f"PGD-{result['settings']['pgd_steps']}", "s"),
    ):
        if part in result:
            keys = sorted(result[part], key=float)
            ax.plot(
                [255 * float(k) for k in keys],
                [100 * result[part][k] for k in keys],
                marker=marker,
                label=label,
            )
    ax.set(xlabel="eps x 255 (L-inf, pixel units)", ylabel="accuracy (%)", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, out_png)


def plot_corruptions(result: dict[str, Any], out_png: str | Path, title: str = "") -> Path:
    """Accuracy vs severity, one line per corruption type, the mean in black, clean accuracy dashed."""
    plt = pyplot()
    c = result["corruptions"]
    fig, ax = plt.subplots(figsize=(8.0, 4.6))
    cmap = plt.get_cmap("tab20")
    for i, (name, row) in enumerate(c["table"].items()):
        sevs = list(row)
        ax.plot(
            [int(v) for v in sevs], [100 * row[v] for v in sevs], marker=".", color=cmap(i % 20), label=name
        )
    sevs = list(c["by_severity"])
    ax.plot(
        [int(v) for v in sevs],
        [100 * c["by_severity"][v] for v in sevs],
        color="black",
        linewidth=2.5,
        label="mean",
    )
    ax.axhline(100 * c["clean"], color="gray", linestyle="--", label="clean")
    ax.set(xlabel="severity", ylabel="accuracy (%)", ylim=(0, 100), xticks=[int(v) for v in sevs])
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, out_png)


def write_reports(result: dict[str, Any], out_dir: str | Path, *, title: str = "") -> dict[str, Any]:
    """Write eval.json (merged with an earlier run of the same evaluation), eval.md and the plots.

    Returns the result as written (after merging).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILES["json"]
    if path.exists():
        try:
            result = _merge(json.loads(path.read_text()), result)
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable earlier file is simply replaced
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    (out / REPORT_FILES["md"]).write_text(render_markdown(result))
    if "reliability" in result:
        plot_reliability(ReliabilityBins(**result["reliability"]), out / REPORT_FILES["reliability"], title)
    if "fgsm" in result or "pgd" in result:
        plot_adversarial(result, out / REPORT_FILES["adversarial"], title)
    if "corruptions" in result:
        plot_corruptions(result, out / REPORT_FILES["corruptions"], title)
    return result
