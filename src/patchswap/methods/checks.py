"""Option checks the distillation methods share (cskd, dlb, tfkd, kd): one wording for every method."""

from __future__ import annotations

__all__ = ["check_distillation"]


def check_distillation(method: str, temperature: float, **weights: float) -> None:
    """Raise ``ValueError`` naming ``method`` and the option unless ``temperature`` is positive and every
    weight (given by its option name) is non-negative."""
    if not temperature > 0:
        raise ValueError(f"{method} temperature must be positive, got {temperature!r}")
    for key, value in weights.items():
        if not value >= 0:
            raise ValueError(f"{method} {key} must be non-negative, got {value!r}")
