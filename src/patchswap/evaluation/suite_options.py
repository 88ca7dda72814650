"""What the evaluation suite runs and how: :class:`SuiteOptions` and the parsers of its command-line lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .adversarial import DEFAULT_EPS
from .corruptions import CORRUPTIONS

__all__ = ["PARTS", "SuiteOptions", "parse_corruptions", "parse_eps", "parse_parts", "parse_severities"]

PARTS: tuple[str, ...] = ("calibration", "fgsm", "pgd", "corruptions")


def _items(text: str | Sequence[Any]) -> list[str]:
    if isinstance(text, str):
        return [t.strip() for t in text.split(",") if t.strip()]
    return [str(t).strip() for t in text]


def _choose(
    text: str | Sequence[str], valid: tuple[str, ...], unknown_what: str, valid_word: str
) -> tuple[str, ...]:
    """``"all"`` or a comma list of names from ``valid``, returned in ``valid``'s order."""
    items = [t.lower() for t in _items(text)]
    if items == ["all"]:
        return valid
    unknown = [t for t in items if t not in valid]
    if unknown or not items:
        raise ValueError(
            f"unknown {unknown_what} {unknown or text!r}; {valid_word} {', '.join(valid)} or all"
        )
    return tuple(v for v in valid if v in items)


def parse_parts(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"`` or a comma list of calibration, fgsm, pgd, corruptions (kept in that order)."""
    return _choose(text, PARTS, "suite part(s)", "choose from")


def parse_eps(text: str | Sequence[Any]) -> tuple[float, ...]:
    """Comma list of eps in [0, 1] pixel units; fractions allowed: ``0,1/255,8/255,0.01``."""
    out = []
    for item in _items(text):
        try:
            value = float(Fraction(item))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"eps {item!r} is not a number or fraction like 8/255") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"eps must be in [0, 1] (pixel units, e.g. 8/255), got {item}")
        out.append(value)
    if not out:
        raise ValueError("give at least one eps")
    return tuple(sorted(set(out)))


def parse_corruptions(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"`` or a comma list of corruption names."""
    return _choose(text, CORRUPTIONS, "corruption(s)", "valid:")


def parse_severities(text: str | Sequence[Any]) -> tuple[int, ...]:
    """Comma list of severities 1..5."""
    try:
        out = sorted({int(t) for t in _items(text)})
    except ValueError:
        raise ValueError(f"severities must be integers 1..5, got {text!r}") from None
    if not out or out[0] < 1 or out[-1] > 5:
        raise ValueError(f"severities must be integers 1..5, got {text!r}")
    return tuple(out)


@dataclass
class SuiteOptions:
    """What to run and how; every field is recorded in the results under ``settings``."""

    parts: tuple[str, ...] = PARTS
    eps: tuple[float, ...] = DEFAULT_EPS
    pgd_steps: int = 10
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    max_images: int | None = None  # evaluate a seeded random subset of this many images
    batch_size: int | None = None  # images per forward pass (the engine uses data.eval_batch_size; else 256)
    seed: int = 0  # PGD random starts, corruption noise, the --max-images subset
    fuse_batchnorm: bool = True  # fold eval-mode BatchNorm into the convolutions (torch.fx) for speed

    def __post_init__(self) -> None:
        self.parts = parse_parts(self.parts)
        self.eps = parse_eps(self.eps)
        self.corruptions = parse_corruptions(self.corruptions)
        self.severities = parse_severities(self.severities)
        if self.pgd_steps < 1:
            raise ValueError(f"pgd_steps must be at least 1, got {self.pgd_steps}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be positive, got {self.max_images}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
