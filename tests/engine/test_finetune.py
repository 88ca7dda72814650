"""Fine-tuning: the head's and the backbone's learning rates, a frozen backbone, the EMA of the weights."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from patchswap.engine import evaluate, resume, train
from patchswap.engine.config import ConfigError, OptimSection, load_config
from patchswap.engine.optimization import configure_optimization, param_groups
from patchswap.models import create_model, split_head
from patchswap.runs import load_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")


def _weights(run_dir: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"{name}.safetensors")


# -- learning rates ------------------------------------------------------------------------------------
def test_backbone_lr_scale_makes_a_head_group_and_a_backbone_group():
    model = create_model("resnet8", 5)
    o = OptimSection(lr=0.2, backbone_lr_scale=0.1)
    head, backbone = param_groups(o, model)
    assert (head["name"], head["lr"]) == ("head", 0.2)
    assert (backbone["name"], backbone["lr"]) == ("backbone", pytest.approx(0.02))
    assert [id(p) for p in head["params"]] == [id(model.fc.weight), id(model.fc.bias)]
    assert len(head["params"]) + len(backbone["params"]) == len(list(model.parameters()))
    assert len(param_groups(OptimSection(lr=0.2), model)) == 1  # scale 1: one group, as before


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_the_schedule_keeps_the_ratio_of_the_two_learning_rates(optimizer, schedule):
    model = create_model("resnet8", 5)
    o = OptimSection(optimizer=optimizer, lr=0.1, backbone_lr_scale=0.25, schedule=schedule, warmup_epochs=1)
    trainer = SimpleNamespace(max_epochs=4, estimated_stepping_batches=40)
    conf = configure_optimization(o, model, trainer)  # type: ignore[arg-type]
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW)
    for _ in range(25):
        head_lr, backbone_lr = (g["lr"] for g in opt.param_groups)
        assert backbone_lr == pytest.approx(0.25 * head_lr)
        opt.step()
        sched.step()
    assert max(g["lr"] for g in opt.param_groups) < 0.1  # decaying after the warm-up


def test_fine_tuning_keys_are_checked():
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        load_config(None, {"optim.ema_decay": "1"})
    with pytest.raises(ConfigError, match="backbone_lr_scale must be >= 0"):
        load_config(None, {"optim.backbone_lr_scale": "-1"})
    from patchswap.engine import load_transfer_config

    with pytest.raises(ConfigError, match="apply to `patchswap train`"):
        load_transfer_config(None, {"optim.ema_decay": "0.9"})


# -- a frozen backbone ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A resnet8 for the digits (1 channel, 10 classes) with BatchNorm statistics that are not 0/1."""
    torch.manual_seed(3)
    model = create_model("resnet8", 10, in_chans=1)
    model.train()
    with torch.no_grad():
        model(torch.randn(64, 1, 8, 8) * 2 + 1)  # moves every BN's running mean and variance
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("pretrained") / "resnet8-digits.safetensors"
    save_file(state, str(path))
    return path, state


def test_frozen_backbone_parameters_and_bn_statistics_do_not_move(tiny_overrides, pretrained_file, tmp_path):
    path, source = pretrained_file
    run_dir = tmp_path / "frozen"
    overrides = tiny_overrides(
        run_dir,
        method="ips",
        trainer__epochs=1,
        model__pretrained=str(path),
        model__reset_classifier="true",
        model__channels_last="false",
        optim__freeze_backbone_epochs=1,
        optim__backbone_lr_scale=0.5,
    )
    with pytest.warns(UserWarning, match="classifier tensor"):
        train(load_config(None, overrides))
    after = _weights(run_dir)
    head = {n for n, _ in split_head(create_model("resnet8", 10, in_chans=1))[0]}
    moved = [k for k in source if k.split(".")[0] != "fc" and not torch.equal(after[k], source[k])]
    assert not moved, f"frozen backbone tensors moved: {moved[:5]}"  # incl. running_mean/var, counters
    assert any("running_mean" in k for k in source)
    assert head and all(not torch.equal(after[k], source[k]) for k in head)  # the head trained


def test_the_backbone_trains_after_the_frozen_epochs(tiny_overrides, pretrained_file, tmp_path):
    path, source = pretrained_file
    run_dir = tmp_path / "unfrozen"
    overrides = tiny_overrides(
        run_dir,
        method="ce",
        trainer__epochs=2,
        model__pretrained=str(path),
        model__channels_last="false",
        optim__freeze_backbone_epochs=1,
    )
    train(load_config(None, overrides))
    after = _weights(run_dir)
    assert not torch.equal(after["conv1.weight"], source["conv1.weight"])
    assert not torch.equal(after["layer1.0.bn1.running_mean"], source["layer1.0.bn1.running_mean"])


# -- EMA -------------------------------------------------------------------------------------------
def _ema_overrides(tiny_overrides, run_dir: Path, epochs: int) -> dict[str, str]:
    return tiny_overrides(
        run_dir,
        method="ce",
        trainer__epochs=epochs,
        optim__schedule="constant",
        optim__ema_decay=0.9,
    )


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, tiny_overrides):
    run_dir = tmp_path_factory.mktemp("ema") / "run"
    summary = train(load_config(None, _ema_overrides(tiny_overrides, run_dir, 2)))
    return run_dir, summary


def test_checkpoints_hold_the_ema_weights_and_the_online_weights(ema_run):
    run_dir, _ = ema_run
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    ema = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    online = ckpt["callbacks"]["WeightEMA"]["online"]
    assert ema.keys() == online.keys()
    assert not torch.equal(ema["fc.weight"], online["fc.weight"])
    last = _weights(run_dir)
    assert all(torch.equal(last[k], ema[k]) for k in last)  # last.safetensors: the EMA weights


def test_validation_and_test_use_the_ema_weights(ema_run):
    run_dir, summary = ema_run
    import csv

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    last_val = evaluate(run_dir / "checkpoints" / "last.ckpt", split="val")
    assert last_val["acc"] == pytest.approx(float(rows[-1]["val/acc"]), abs=1e-6)  # validated on EMA
    assert evaluate(run_dir)["acc"] == pytest.approx(summary["test"]["acc"], abs=1e-7)


def test_resume_restores_the_ema_exactly(ema_run, tiny_overrides, tmp_path):
    reference, _ = ema_run
    run_dir = tmp_path / "resumed"
    train(load_config(None, _ema_overrides(tiny_overrides, run_dir, 1)))
    resume(run_dir, {"trainer.epochs": "2"})
    a = load_checkpoint(reference / "checkpoints" / "last.ckpt")
    b = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    for key in ("state_dict",):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    on_a, on_b = a["callbacks"]["WeightEMA"]["online"], b["callbacks"]["WeightEMA"]["online"]
    assert all(torch.equal(on_a[k], on_b[k]) for k in on_a)
