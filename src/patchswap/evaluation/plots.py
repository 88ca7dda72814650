"""Training-curve plots from a run's metrics.csv (matplotlib, headless)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

__all__ = ["plot_training_curves", "pyplot", "save_figure"]


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out_png: str | Path) -> Path:
    """Lay out, write (110 dpi) and close a figure; returns its path."""
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    pyplot().close(fig)
    return out


def plot_training_curves(
    metrics_csv: str | Path,
    out_png: str | Path,
    title: str = "",
    *,
    scores: tuple[tuple[str, str], ...] = (("train/acc", "train acc"), ("val/acc", "val acc")),
    score_label: str = "accuracy (%)",
) -> Path | None:
    """Loss and a score (accuracy, or mIoU / mAP) per epoch; returns the PNG path (None without rows)."""
    plt = pyplot()

    path = Path(metrics_csv)
    if not path.exists():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(int(r["epoch"]) + 1, float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("train/loss", "train loss"), ("val/nll", "val NLL")):
        xs, ys = series(key)
        if xs:
            axes[0].plot(xs, ys, marker=".", label=label)
    for key, label in scores:
        xs, ys = series(key)
        if xs:
            axes[1].plot(xs, [100 * y for y in ys], marker=".", label=label)
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
    axes[1].set(xlabel="epoch", ylabel=score_label, title=score_label.split(" (")[0])
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_png)
