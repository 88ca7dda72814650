"""Shared bits of the benchmarks: locating the seed's sketch and the shared data, timing."""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PATCHSWAP_SHARED", REPO.parent / "shared"))
SEED_FILE = SHARED / "reference" / "seed_ips.py"
CIFAR10_FILES = [SHARED / "data" / f"cifar10-train-part{i}.npz" for i in (1, 2)]


def load_seed() -> ModuleType | None:
    """The seed's reference sketch, or None (with a message) where ../shared is absent."""
    if not SEED_FILE.exists():
        print(f"skipped: the seed's sketch is not at {SEED_FILE} (set PATCHSWAP_SHARED to the shared folder)")
        return None
    spec = importlib.util.spec_from_file_location("seed_ips", SEED_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved so drift hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in samples.items()}


def load_cifar10() -> tuple[np.ndarray, np.ndarray] | None:
    """CIFAR-10 training images (uint8 NHWC) and labels of ../shared/data, or None (with a message)."""
    if not all(f.exists() for f in CIFAR10_FILES):
        print(f"skipped: CIFAR-10 arrays not found under {SHARED / 'data'}")
        return None
    parts = [np.load(f) for f in CIFAR10_FILES]
    return np.concatenate([p["x"] for p in parts]), np.concatenate([p["y"] for p in parts])
