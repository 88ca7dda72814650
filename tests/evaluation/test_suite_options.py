"""The suite's options: parts, eps, corruptions and severities from command-line lists."""

from __future__ import annotations

import pytest

from patchswap.evaluation.suite_options import SuiteOptions, parse_eps, parse_parts


def test_option_parsing():
    assert parse_parts("all") == ("calibration", "fgsm", "pgd", "corruptions")
    assert parse_parts("pgd,calibration") == ("calibration", "pgd")
    assert parse_eps("0.01, 8/255,0,1/255") == (0.0, 1 / 255, 0.01, 8 / 255)
    for bad in (lambda: parse_parts("fgsm,rain"), lambda: parse_eps("2"), lambda: parse_eps("x")):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError, match="unknown corruption"):
        SuiteOptions(corruptions="fog,rain")
    with pytest.raises(ValueError, match="1..5"):
        SuiteOptions(severities="0,2")
