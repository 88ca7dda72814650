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


GPU_STUDY_DIR = Path(__file__).resolve().parents[1] / "configs" / "gpu-study"
GPU_STUDIES = sorted(p for p in GPU_STUDY_DIR.glob("*.yaml") if not p.name.endswith("-base.yaml"))


def test_there_are_gpu_studies():
    assert [p.name for p in GPU_STUDIES] == ["cifar10-offline.yaml", "cifar10.yaml", "cifar100.yaml"]


@pytest.mark.parametrize("path", GPU_STUDIES, ids=lambda p: p.name)
def test_gpu_study_loads_with_every_method_for_every_architecture(path):
    from patchswap.study.compare import load_study

    study = load_study(path)  # loads and validates the config of every run
    assert study.seeds == [0, 1, 2]
    methods = {"ce", "label_smoothing", "cutmix", "cskd", "pskd", "ips"}
    archs = {"resnet18", "wrn_40_2", "vgg13", "mobilenetv2", "shufflenetv2"}
    for arch in archs:
        assert {m for m in methods if f"{arch}-{m}" in study.entries} == methods
    assert study.entries["resnet18-ce-2x"]["trainer.epochs"] == "480"
    assert {s.overrides["trainer.seed"] for s in study.runs()} == {"0", "1", "2"}


TRANSFER_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "transfer").glob("*.yaml"))


@pytest.mark.parametrize("path", TRANSFER_CONFIGS, ids=lambda p: p.name)
def test_transfer_recipe_loads(path):
    from patchswap.engine import load_transfer_config

    cfg = load_transfer_config([path])
    assert cfg.data.name.startswith("voc") and cfg.trainer.accelerator == "gpu"
    assert cfg.model.arch in (("deeplabv3", "fcn") if cfg.task == "segment" else ("fasterrcnn", "retinanet"))


FINETUNE_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "finetune").glob("*.yaml"))


def test_there_is_a_finetune_recipe_per_dataset_and_backbone():
    names = {p.stem for p in FINETUNE_CONFIGS}
    assert names == {
        f"{d}-{m}" for d in ("cub200", "dogs", "flowers102") for m in ("resnet50", "mobilenetv3")
    }


@pytest.mark.parametrize("path", FINETUNE_CONFIGS, ids=lambda p: p.name)
def test_finetune_recipe_loads_for_ce_and_ips_and_says_its_layout_and_command(path):
    from patchswap.models import classifier_names, create_model

    cfg = load_config([path])
    assert cfg.method == "ips" and load_config([path], {"method": "ce"}).method == "ce"
    assert cfg.data.name.startswith("folder:data/") and cfg.model.pretrained
    assert cfg.model.name in ("torchvision:resnet50", "timm:mobilenetv3_large_100")
    o = cfg.optim
    assert o.schedule == "cosine" and o.warmup_epochs > 0 and 0 < o.backbone_lr_scale < 1
    assert o.freeze_backbone_epochs == 1 and 0 < o.ema_decay < 1
    text = path.read_text()
    assert f"{cfg.data.name} = " in text and "train/<" in text and "test/<" in text
    assert f"patchswap train --config configs/finetune/{path.name}" in text and "--method ce" in text
    # The head that backbone_lr_scale and the frozen epochs need is found (no weights are loaded here).
    assert classifier_names(create_model(cfg.model.name, 5)) == (
        ["fc"] if "resnet50" in path.name else ["classifier"]
    )


RESULT_STUDIES = sorted(
    p
    for p in (Path(__file__).resolve().parents[1] / "docs" / "results").glob("*/*.yaml")
    if "entries:" in p.read_text()
)


def test_the_committed_studies_are_found():
    assert {p.parent.name for p in RESULT_STUDIES} >= {
        "cifar10-cpu",
        "cifar10-cpu-converged",
        "finetune-cifar5",
    }


@pytest.mark.parametrize("path", RESULT_STUDIES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_study_still_loads(path):
    """A study file next to its results must keep loading (every run's config validated) as options
    change, so anyone can rerun or continue it with the command its README gives."""
    from patchswap.study.compare import load_study

    study = load_study(path)
    assert study.runs()
