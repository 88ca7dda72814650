"""One reading of the device names users and configs give, for every command that places a model."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device from ``auto``/None (CUDA when present, else Apple's MPS, else CPU), Lightning's
    accelerator names (``gpu``, ``cuda``, ``mps``, ``cpu``: ``trainer.accelerator``), or any device torch
    reads (``cuda:1``)."""
    if isinstance(device, torch.device):
        return device
    name = "auto" if device is None else str(device).lower()
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    if name == "gpu":
        return torch.device("cuda")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(
            f"unknown device {device!r}: use auto, cpu, cuda (or cuda:N), gpu or mps ({e})"
        ) from None
