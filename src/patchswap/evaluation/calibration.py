"""Calibration and selective-prediction metrics of a classifier's softmax outputs.

* ``nll`` -- mean negative log-likelihood of the true class (cross-entropy of the logits).
* ``ece`` -- expected calibration error, 15 equal-width confidence bins, L1 (torchmetrics'
  ``MulticlassCalibrationError``; confidence = max softmax probability).
* ``aurc`` / ``eaurc`` -- area under the risk-coverage curve and its excess over the best possible
  ranking of the same predictions (Geifman, Uziel & El-Yaniv, ICLR 2019). Samples are accepted in
  order of decreasing confidence (max softmax); the risk at coverage ``k / n`` is the error rate of
  the ``k`` most confident samples, and AURC is the mean of the ``n`` risks. Tied confidences count
  their expected value over all orders of the tie, so the result never depends on sample order.
  ``eaurc = aurc - aurc_opt`` where ``aurc_opt`` is the AURC of a ranking that puts every correct
  sample first; it is exact for ``n`` samples (the often-quoted ``r + (1 - r) ln(1 - r)`` is its
  large-``n`` limit), so ``eaurc >= 0`` always.
* ``brier`` -- multi-class Brier score: ``sum_k (p_k - [y == k])^2``, averaged over samples (0..2).

All functions take logits or probabilities as ``[N, K]`` tensors and integer labels ``[N]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from .plots import pyplot, save_figure

__all__ = [
    "ReliabilityBins",
    "aurc",
    "brier_score",
    "calibration_metrics",
    "eaurc",
    "expected_calibration_error",
    "nll",
    "plot_reliability",
    "reliability_bins",
    "risk_coverage",
]

N_BINS = 15


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits)``."""
    return float(F.cross_entropy(logits.double(), labels.long()))


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over samples of ``sum_k (p_k - onehot_k)^2`` (0 = perfect, 2 = confidently wrong)."""
    p = probs.double()
    onehot = F.one_hot(labels.long(), p.shape[1]).double()
    return float((p - onehot).square().sum(1).mean())


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """L1 ECE over ``n_bins`` equal-width bins of the max probability (torchmetrics)."""
    return float(
        multiclass_calibration_error(
            probs.float(), labels.long(), num_classes=probs.shape[1], n_bins=n_bins, norm="l1"
        )
    )


def risk_coverage(confidence: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(coverage, risk)`` at coverages ``1/n, 2/n, ..., 1``, most confident samples first.

    Within a group of equal confidences the errors are spread evenly (their expected count over all
    orders of the group), so the curve does not depend on how ties happen to be ordered.
    """
    conf = confidence.detach().double().flatten().cpu()
    err = (~correct.detach().bool().flatten().cpu()).double()
    n = conf.numel()
    if n == 0:
        raise ValueError("risk_coverage needs at least one sample")
    order = torch.argsort(conf, descending=True, stable=True)
    conf, err = conf[order], err[order]
    cum_err = err.cumsum(0)
    # Tie groups: expected errors among the first j of a group with e errors in g samples = e * j / g.
    _, inverse, counts = torch.unique_consecutive(conf, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0)
    starts = ends - counts
    group_err = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, err)
    before = torch.cat([torch.zeros(1, dtype=torch.float64), cum_err[ends[:-1] - 1]])
    pos = torch.arange(n, dtype=torch.float64) - starts[inverse].double() + 1  # 1..g within the group
    expected = before[inverse] + group_err[inverse] * pos / counts[inverse].double()
    k = torch.arange(1, n + 1, dtype=torch.float64)
    return k / n, expected / k


def _optimal_aurc(n: int, errors: int) -> float:
    """AURC of the ideal ranking (all correct samples first): ``(1/n) * sum_{k>m} (k - m) / k``."""
    m = n - errors
    k = torch.arange(m + 1, n + 1, dtype=torch.float64)
    return float(((k - m) / k).sum() / n) if errors else 0.0


def aurc(confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """Area under the risk-coverage curve (mean selective risk over the ``n`` coverages)."""
    _, risk = risk_coverage(confidence, correct)
    return float(risk.mean())


def eaurc(confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """Excess AURC: ``aurc`` minus the AURC of the best ranking of the same correct/incorrect set."""
    errors = int((~correct.bool()).sum())
    return aurc(confidence, correct) - _optimal_aurc(correct.numel(), errors)


@dataclass
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram (bins ``[i/n, (i+1)/n)``, the last one closed).

    ``.ece`` equals torchmetrics' ECE unless some confidence is exactly 1.0: torchmetrics keeps those
    in a bin of their own, the diagram puts them in the last bin.
    """

    edges: list[float]
    count: list[int]
    confidence: list[float]  # mean confidence per bin (0 for empty bins)
    accuracy: list[float]  # accuracy per bin (0 for empty bins)

    @property
    def ece(self) -> float:
        total = sum(self.count)
        rows = zip(self.count, self.accuracy, self.confidence, strict=True)
        return sum(n / total * abs(a - c) for n, a, c in rows) if total else 0.0

    def to_dict(self) -> dict[str, list]:
        return {
            "edges": self.edges,
            "count": self.count,
            "confidence": self.confidence,
            "accuracy": self.accuracy,
        }


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> ReliabilityBins:
    """Confidence/accuracy per equal-width bin, binned like torchmetrics (so ``.ece`` matches ``ece``)."""
    conf, pred = probs.detach().double().cpu().max(1)
    correct = (pred == labels.detach().cpu().long()).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = (torch.bucketize(conf, edges, right=True) - 1).clamp_(0, n_bins - 1)  # conf == 1 -> last bin
    count = torch.bincount(idx, minlength=n_bins).double()
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    acc_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct)
    safe = count.clamp(min=1)
    return ReliabilityBins(
        edges=edges.tolist(),
        count=[int(c) for c in count.tolist()],
        confidence=(conf_sum / safe).tolist(),
        accuracy=(acc_sum / safe).tolist(),
    )


def calibration_metrics(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict[str, float]:
    """``acc, nll, ece, aurc, eaurc, brier`` of ``logits [N, K]`` against ``labels [N]``."""
    logits = logits.detach().float().cpu()
    labels = labels.detach().long().cpu()
    probs = logits.double().softmax(1)
    conf, pred = probs.max(1)
    correct = pred == labels
    return {
        "acc": float(correct.double().mean()),
        "nll": nll(logits, labels),
        # float32 softmax, as the training module computes val/test ECE: the two numbers agree.
        "ece": expected_calibration_error(logits.softmax(1), labels, n_bins),
        "aurc": aurc(conf, correct),
        "eaurc": eaurc(conf, correct),
        "brier": brier_score(probs, labels),
    }


def plot_reliability(bins: ReliabilityBins, out_png: str | Path, title: str = "") -> Path:
    """Reliability diagram (accuracy per confidence bin, gap to the diagonal) over a confidence histogram."""
    plt = pyplot()

    n = len(bins.count)
    lefts = bins.edges[:-1]
    width = 1.0 / n
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(4.8, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    filled = [i for i in range(n) if bins.count[i] > 0]
    ax.bar(
        [lefts[i] for i in filled],
        [bins.accuracy[i] for i in filled],
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="black",
        linewidth=0.5,
        label="accuracy",
    )
    for i in filled:  # the gap between accuracy and mean confidence, per bin
        lo, hi = sorted((bins.accuracy[i], bins.confidence[i]))
        ax.bar(
            lefts[i],
            hi - lo,
            bottom=lo,
            width=width,
            align="edge",
            color="tab:red",
            alpha=0.3,
            edgecolor="tab:red",
            hatch="//",
            linewidth=0.5,
            label="gap" if i == filled[0] else None,
        )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.text(0.04, 0.9, f"ECE {100 * bins.ece:.2f}%", transform=ax.transAxes, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    total = max(1, sum(bins.count))
    hist.bar(
        lefts, [c / total for c in bins.count], width=width, align="edge", color="gray", edgecolor="black"
    )
    hist.set(xlabel="confidence (max softmax)", ylabel="share")
    hist.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, out_png)
