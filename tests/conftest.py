"""Shared fixtures: tiny end-to-end runs on the embedded digits data, trained once per session."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

# Small enough to train in about a second per epoch on 2 CPU cores, big enough to learn something.
TINY = {
    "data.name": "digits",
    "model.name": "resnet8",
    "data.batch_size": "32",
    "data.train_subset": "400",
    "trainer.progress_bar": "false",
    "trainer.accelerator": "cpu",
    # Pinned: tests compare exact numbers across processes and with float32 hand computations, and
    # `auto` picks bf16-mixed on CPUs with native bfloat16 and 32-true elsewhere (machine-dependent).
    "trainer.precision": "32-true",
}
TINY_TRAIN_SIZE = 400
TINY_BATCH = 32
TINY_EPOCHS = 3


@pytest.fixture(scope="session")
def tiny_sizes() -> dict[str, int]:
    """Training images, pairs per step and epochs of the tiny run."""
    return {"train": TINY_TRAIN_SIZE, "batch": TINY_BATCH, "epochs": TINY_EPOCHS}


@contextlib.contextmanager
def _one_thread():
    """One intra-op thread while training, in this process as in the subprocesses (OMP_NUM_THREADS=1).

    The exact-equality checks compare runs made in different processes: they must use the same
    kernels, and one thread also avoids oversubscribing a busy 2-core machine.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def single_thread():
    """Train with one thread for the tests of a module (see ``_one_thread``)."""
    with _one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_overrides():
    """``section.key -> text`` overrides of a tiny run; call with a run dir and extra overrides."""

    def make(run_dir: Path, **extra: str) -> dict[str, str]:
        out = {**TINY, "trainer.epochs": str(TINY_EPOCHS), "trainer.run_dir": str(run_dir)}
        out.update({k.replace("__", "."): str(v) for k, v in extra.items()})
        return out

    return make


@pytest.fixture(scope="session")
def tiny_argv():
    """The same tiny run as command-line flags."""

    def make(run_dir: Path, **extra: str) -> list[str]:
        flags = {**TINY, "trainer.epochs": str(TINY_EPOCHS), "trainer.run_dir": str(run_dir)}
        flags.update({k.replace("__", "."): str(v) for k, v in extra.items()})
        argv: list[str] = []
        for key, value in flags.items():
            argv += [f"--{key}", value]
        return argv

    return make


@pytest.fixture(scope="session")
def subprocess_env():
    """Environment for ``python -m patchswap.cli`` children: one thread, no fault unless asked."""
    env = dict(os.environ)
    env.pop("PATCHSWAP_FAULT_AT_STEP", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_overrides):
    """One finished tiny IPS run (seed 0): ``(run_dir, summary)``. Tests must not touch its checkpoints."""
    from patchswap.engine import train
    from patchswap.engine.config import load_config

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    with _one_thread():
        summary = train(load_config(None, tiny_overrides(run_dir)))
    return run_dir, summary
