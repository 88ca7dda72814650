"""Calibration metrics against hand-computed values and brute-force numpy references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from patchswap.evaluation.calibration import (
    aurc,
    brier_score,
    calibration_metrics,
    eaurc,
    expected_calibration_error,
    nll,
    plot_reliability,
    reliability_bins,
    risk_coverage,
)

# Four samples, three classes; confidences 0.7, 0.55, 0.45, 0.85 fall in four different 1/15 bins.
PROBS = torch.tensor(
    [
        [0.70, 0.20, 0.10],  # label 0: correct, conf 0.70
        [0.30, 0.55, 0.15],  # label 0: wrong,   conf 0.55
        [0.30, 0.25, 0.45],  # label 2: correct, conf 0.45
        [0.05, 0.10, 0.85],  # label 1: wrong,   conf 0.85
    ],
    dtype=torch.float64,
)
LABELS = torch.tensor([0, 0, 2, 1])


def test_golden_values_by_hand():
    logits = PROBS.log()
    # NLL: -(ln .7 + ln .3 + ln .45 + ln .1) / 4
    assert nll(logits, LABELS) == pytest.approx(
        -(math.log(0.7) + math.log(0.3) + math.log(0.45) + math.log(0.1)) / 4
    )
    # Brier: (.09+.04+.01) + (.09+.2025+.0225)... written out per sample
    per_sample = [
        0.3**2 + 0.2**2 + 0.1**2,
        0.7**2 + 0.55**2 + 0.15**2,
        0.3**2 + 0.25**2 + 0.55**2,
        0.05**2 + 0.9**2 + 0.85**2,
    ]
    assert brier_score(PROBS, LABELS) == pytest.approx(sum(per_sample) / 4)
    # ECE: every sample alone in its bin -> mean |correct - conf| = (.3 + .55 + .55 + .85) / 4
    assert expected_calibration_error(PROBS, LABELS) == pytest.approx(2.25 / 4, abs=1e-6)
    # AURC: by confidence 0.85 (wrong), 0.70 (ok), 0.55 (wrong), 0.45 (ok): risks 1, 1/2, 2/3, 2/4.
    conf, pred = PROBS.max(1)
    correct = pred == LABELS
    assert aurc(conf, correct) == pytest.approx((1 + 1 / 2 + 2 / 3 + 2 / 4) / 4)
    # Best ranking puts both correct samples first: risks 0, 0, 1/3, 2/4.
    assert eaurc(conf, correct) == pytest.approx((1 + 1 / 2 + 2 / 3 + 2 / 4) / 4 - (1 / 3 + 2 / 4) / 4)
    m = calibration_metrics(logits, LABELS)
    assert m["acc"] == 0.5
    assert set(m) == {"acc", "nll", "ece", "aurc", "eaurc", "brier"}


def _numpy_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    conf, pred = probs.max(1), probs.argmax(1)
    ece = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= hi))
        if in_bin.any():
            ece += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    return ece


def _numpy_aurc(conf: np.ndarray, correct: np.ndarray) -> float:
    """Brute force: the risk of the k most confident samples for every k (distinct confidences)."""
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    risks = [np.mean([not correct[i] for i in order[:k]]) for k in range(1, len(conf) + 1)]
    return float(np.mean(risks))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_numpy_references_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(300, 7)) * 3
    labels = rng.integers(0, 7, size=300)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t_logits, t_labels = torch.from_numpy(logits), torch.from_numpy(labels)
    m = calibration_metrics(t_logits, t_labels)
    assert m["acc"] == pytest.approx((probs.argmax(1) == labels).mean())
    assert m["nll"] == pytest.approx(-np.log(probs[np.arange(300), labels]).mean(), rel=1e-6)
    assert m["brier"] == pytest.approx(((probs - np.eye(7)[labels]) ** 2).sum(1).mean(), rel=1e-6)
    assert m["ece"] == pytest.approx(_numpy_ece(probs, labels), abs=1e-5)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    assert m["aurc"] == pytest.approx(_numpy_aurc(conf, correct), rel=1e-6)
    bins = reliability_bins(torch.from_numpy(probs), t_labels)
    assert bins.ece == pytest.approx(m["ece"], abs=1e-5)
    assert sum(bins.count) == 300


def test_ties_count_their_expected_value_over_all_orders():
    conf = torch.tensor([0.9, 0.9, 0.9, 0.5, 0.5, 0.2])
    correct = torch.tensor([True, False, False, True, False, True])
    groups = [[0, 1, 2], [3, 4], [5]]
    values = []
    for a, b in itertools.product(itertools.permutations(groups[0]), itertools.permutations(groups[1])):
        order = [*a, *b, 5]
        risks = [np.mean([not bool(correct[i]) for i in order[:k]]) for k in range(1, 7)]
        values.append(np.mean(risks))
    assert aurc(conf, correct) == pytest.approx(float(np.mean(values)), rel=1e-12)
    # ... so the result does not depend on the order of the samples.
    perm = torch.tensor([5, 3, 1, 0, 4, 2])
    assert aurc(conf[perm], correct[perm]) == pytest.approx(aurc(conf, correct), rel=1e-12)


def test_eaurc_is_zero_for_a_perfect_ranking_and_tends_to_the_closed_form():
    conf = torch.linspace(1, 0, 10)
    correct = torch.tensor([True] * 7 + [False] * 3)
    assert eaurc(conf, correct) == pytest.approx(0.0, abs=1e-12)
    assert eaurc(conf.flip(0), correct) > 0.3  # the worst ranking
    cov, risk = risk_coverage(conf, correct)
    assert cov[-1] == 1 and risk[-1] == pytest.approx(0.3)
    # Large n: the exact optimum matches Geifman's r + (1 - r) ln(1 - r).
    n, r = 20000, 0.25
    correct = torch.arange(n) >= int(r * n)
    conf = torch.rand(n, generator=torch.Generator().manual_seed(0))
    opt = aurc(conf, correct) - eaurc(conf, correct)
    assert opt == pytest.approx(r + (1 - r) * math.log(1 - r), abs=1e-3)
    assert 0 < eaurc(conf, correct) < aurc(conf, correct)


def test_reliability_png(tmp_path):
    probs = torch.softmax(torch.randn(200, 5, generator=torch.Generator().manual_seed(0)) * 2, 1)
    labels = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(1))
    out = plot_reliability(reliability_bins(probs, labels), tmp_path / "r.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
