"""Every shipped recipe loads and validates, so a typo in configs/ fails CI, not a GPU job."""

from pathlib import Path

import pytest

from patchswap.engine.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_recipes():
    assert len(CONFIGS) >= 6


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipe_loads(path):
    cfg = load_config([path])
    assert cfg.method in ("ce", "ips")
    if "240ep" in path.name:
        assert (cfg.trainer.epochs, cfg.optim.lr, cfg.data.batch_size) == (240, 0.05, 64)
        assert cfg.optim.milestones == [150, 180, 210] and cfg.optim.weight_decay == 5e-4
    if "200ep" in path.name:
        assert (cfg.trainer.epochs, cfg.optim.lr, cfg.data.batch_size) == (200, 0.1, 128)
    if "cifar100" in path.name:
        assert cfg.data.val_split == 5000 and isinstance(cfg.data.val_split, int)
