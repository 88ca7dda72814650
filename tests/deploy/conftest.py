"""A copy of the session's tiny run for the deploy tests (calibrate and export write into a run)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def deploy_run_dir(tiny_run, tmp_path_factory):
    """A copy of the tiny IPS run (digits, resnet8) that deploy tests may write into."""
    dst = tmp_path_factory.mktemp("deploy") / "run"
    shutil.copytree(tiny_run[0], dst)
    return dst


@pytest.fixture(scope="session")
def loaded_run(deploy_run_dir):
    """The copy, loaded on CPU (network in eval mode, data bundle rebuilt from its config)."""
    from patchswap.deploy import load_run

    return load_run(deploy_run_dir, device="cpu")
