"""End to end: ``patchswap transfer`` fine-tunes a trained backbone on tiny MNIST scenes (segment, detect)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from patchswap.cli import main
from patchswap.engine import (
    RunError,
    evaluate_transfer,
    load_transfer_config,
    resume_transfer,
    train_transfer,
)
from patchswap.engine.config import ConfigError

pytestmark = pytest.mark.usefixtures("single_thread")

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_mnist = pytest.mark.skipif(
    not (SHARED / "mnist-train.npz").exists(), reason=f"MNIST scenes need {SHARED}/mnist-*.npz"
)


def _overrides(run_dir: Path, backbone: str, **extra: str) -> dict[str, str]:
    out = {
        "data.data_dir": str(SHARED),
        "data.train_count": "48",
        "data.val_count": "16",
        "data.test_count": "16",
        "data.canvas": "48",
        "data.batch_size": "8",
        "data.eval_batch_size": "16",
        "model.backbone": backbone,
        "trainer.epochs": "2",
        "trainer.accelerator": "cpu",
        "trainer.progress_bar": "false",
        "trainer.run_dir": str(run_dir),
    }
    out.update({k.replace("__", "."): str(v) for k, v in extra.items()})
    return out


@pytest.fixture(scope="module")
def segment_ips_run(tiny_run, tmp_path_factory):
    """A 2-epoch dense-IPS segmentation run whose backbone is the tiny classification run."""
    run_dir = tmp_path_factory.mktemp("transfer") / "seg-ips"
    summary = train_transfer(load_transfer_config(None, _overrides(run_dir, str(tiny_run[0]), method="ips")))
    return run_dir, summary


@needs_mnist
def test_segmentation_run_directory_and_summary(segment_ips_run, tiny_run):
    run_dir, summary = segment_ips_run
    for name in ("config.yaml", "metrics.csv", "summary.json", "curves.png"):
        assert (run_dir / name).is_file(), name
    for name in ("last.ckpt", "best.ckpt", "best.safetensors"):
        assert (run_dir / "checkpoints" / name).is_file(), name
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert summary["task"] == "segment" and summary["method"] == "ips" and summary["epochs_run"] == 2
    assert summary["selected_on"] == "val/miou"
    assert str(tiny_run[0]) in summary["backbone"]
    for split in ("val", "test"):
        assert 0.0 <= summary[split]["miou"] <= 1.0
        assert set(summary[split]["iou_per_class"]) <= {"background", *map(str, range(10))}
    # ips pushes originals and swapped views: four images per pair.
    assert summary["images_seen"] == 4 * 48 * 2


@needs_mnist
def test_backbone_weights_come_from_the_classification_run(segment_ips_run, tiny_run):
    """Before fine-tuning, the encoder holds the run's weights: check one conv through the saved config."""
    from patchswap.dense.models import load_backbone

    backbone, source, _ = load_backbone(str(tiny_run[0]), in_chans=1)
    trained = load_file(tiny_run[0] / "checkpoints" / "best.safetensors")
    ours = backbone.state_dict()
    assert "best" in source
    assert torch.equal(ours["conv1.weight"], trained["conv1.weight"])


@needs_mnist
def test_evaluate_reproduces_the_test_score(segment_ips_run):
    run_dir, summary = segment_ips_run
    res = evaluate_transfer(run_dir)
    assert res["miou"] == pytest.approx(summary["test"]["miou"], abs=1e-6)


@needs_mnist
def test_evaluate_needs_only_the_transfer_checkpoint(segment_ips_run, tmp_path):
    """A transfer checkpoint names its backbone's architecture, so it evaluates after the backbone's run
    directory is gone (here: its recorded path points nowhere)."""
    from patchswap.runs import BACKBONE_KEY, load_checkpoint
    from patchswap.runs import TRANSFER_CONFIG_KEY as CONFIG_KEY

    run_dir, summary = segment_ips_run
    ckpt = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert ckpt[BACKBONE_KEY] == "resnet8"
    ckpt[CONFIG_KEY]["model"]["backbone"] = str(tmp_path / "gone" / "run")
    moved = tmp_path / "moved.ckpt"
    torch.save(ckpt, moved)
    res = evaluate_transfer(moved)
    assert res["miou"] == pytest.approx(summary["test"]["miou"], abs=1e-6)


@needs_mnist
def test_same_seed_same_weights(segment_ips_run, tiny_run, tmp_path):
    run_dir, _ = segment_ips_run
    again = tmp_path / "again"
    train_transfer(load_transfer_config(None, _overrides(again, str(tiny_run[0]), method="ips")))
    a = load_file(run_dir / "checkpoints" / "last.safetensors")
    b = load_file(again / "checkpoints" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_transfer_resume_refuses_what_would_make_it_another_run(tmp_path):
    """As `train --resume`: only SAFE_ON_RESUME may change, and onecycle cannot change its length."""
    load_transfer_config(None, {"optim.schedule": "onecycle"}).dump(tmp_path / "config.yaml")
    with pytest.raises(RunError, match=r"cannot change optim\.lr .*saved 0\.02, given 0\.5"):
        resume_transfer(tmp_path, {"optim.lr": "0.5"})
    with pytest.raises(RunError, match="onecycle.*cannot be lengthened"):
        resume_transfer(tmp_path, {"trainer.epochs": "20"})
    with pytest.raises(RunError, match="trainer.devices 3 on resume: .*onecycle.*steps per epoch"):
        resume_transfer(tmp_path, {"trainer.devices": "3"})


@needs_mnist
def test_existing_run_refuses_and_resume_continues(segment_ips_run, tmp_path):
    run_dir, _ = segment_ips_run
    with pytest.raises(RunError, match="--resume"):
        train_transfer(load_transfer_config([run_dir / "config.yaml"]))
    with pytest.raises(RunError, match="not a transfer run directory"):
        resume_transfer(tmp_path)


@needs_mnist
@pytest.mark.parametrize("method", ["ce", "ips"])
def test_detection_trains_and_reports_map(method, tmp_path):
    run_dir = tmp_path / "det"
    summary = train_transfer(
        load_transfer_config(
            None,
            _overrides(
                run_dir,
                "resnet8",
                task="detect",
                method=method,
                model__arch="fasterrcnn",
                trainer__epochs="1",
            ),
        )
    )
    assert summary["selected_on"] == "val/map"
    assert 0.0 <= summary["test"]["map"] <= 1.0 and 0.0 <= summary["test"]["map_50"] <= 1.0
    assert summary["images_seen"] == (4 if method == "ips" else 1) * 48


def test_config_errors_say_what_to_change():
    with pytest.raises(ConfigError, match="does not fit task 'detect'"):
        load_transfer_config(None, {"task": "detect", "model.arch": "deeplabv3"})
    assert load_transfer_config(None, {"task": "detect"}).model.arch == "fasterrcnn"  # auto
    assert load_transfer_config(None, {}).model.arch == "fcn"
    with pytest.raises(ConfigError, match="task must be one of segment, detect"):
        load_transfer_config(None, {"task": "classify"})
    with pytest.raises(ConfigError, match="did you mean 'ips.grid'"):
        load_transfer_config(None, {"ips.gird": "2"})
    with pytest.raises(ConfigError, match="ips.min_visible"):
        load_transfer_config(None, {"ips.min_visible": "0"})


@needs_mnist
def test_cli_runs_a_transfer(tmp_path, capsys):
    run_dir = tmp_path / "cli"
    argv = ["transfer", "--model.arch", "fcn", "--trainer.epochs", "1"]
    for key, value in _overrides(run_dir, "resnet8", trainer__epochs="1").items():
        argv += [f"--{key}", value]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test   miou" in out and (run_dir / "summary.json").exists()
    assert main(["transfer", "--task", "detect", "--model.arch", "fcn"]) == 2  # fcn cannot detect
    assert "does not fit task" in capsys.readouterr().err


def _write_voc(root: Path, train: int, val: int) -> None:
    """A small VOC2012 devkit: images of several sizes, palette masks with a class blob and a border."""
    import numpy as np
    from PIL import Image

    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = {"train": [f"t{i}" for i in range(train)], "val": [f"v{i}" for i in range(val)]}
    for split, ids in names.items():
        (voc / f"ImageSets/Segmentation/{split}.txt").write_text("\n".join(ids) + "\n")
        for k, name in enumerate(ids):
            h, w = 36 + 4 * (k % 3), 40 + 6 * (k % 2)
            image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            mask = np.zeros((h, w), dtype=np.uint8)
            cls = 1 + k % 3
            mask[8:24, 10:30] = cls
            image[8:24, 10:30] += np.uint8(60 * cls)
            mask[24, 10:30] = 255
            Image.fromarray(image).save(voc / f"JPEGImages/{name}.jpg")
            png = Image.frombytes("P", (w, h), mask.tobytes())
            png.putpalette(list(range(256)) * 3)
            png.save(voc / f"SegmentationClass/{name}.png")


def test_voc_carves_val_out_of_train_and_tests_on_voc_val(tmp_path):
    """Images of several sizes: random crops for training, padded batches for evaluation."""
    _write_voc(tmp_path / "data", train=12, val=4)
    run_dir = tmp_path / "voc"
    overrides = {
        "data.name": "voc",
        "data.data_dir": str(tmp_path / "data"),
        "data.val_count": "4",
        "data.crop_size": "32",
        "data.batch_size": "4",
        "data.eval_batch_size": "3",
        "model.arch": "fcn",
        "model.backbone": "resnet8",
        "trainer.epochs": "1",
        "trainer.accelerator": "cpu",
        "trainer.progress_bar": "false",
        "trainer.run_dir": str(run_dir),
    }
    summary = train_transfer(load_transfer_config(None, overrides))
    assert summary["train_images"] == 8  # 12 VOC train images - 4 carved out for validation
    assert summary["images_seen"] == 8
    assert 0.0 <= summary["val"]["miou"] <= 1.0 and 0.0 <= summary["test"]["miou"] <= 1.0
    assert len(summary["test"]["iou_per_class"]) == 21  # background + the 20 VOC classes


@needs_mnist
def test_killed_transfer_resumes_to_the_uninterrupted_weights(
    segment_ips_run, tiny_run, subprocess_env, tmp_path
):
    """SIGKILL halfway through epoch 2 of the ips segmentation run, --resume in a new process: same weights.

    The FCN head has dropout: the global RNG is seeded per step, so a resumed run draws the same masks.
    """
    import signal
    import subprocess
    import sys

    reference_dir, reference = segment_ips_run
    run_dir = tmp_path / "killed"
    steps = 48 // 8  # pairs per epoch / pairs per step
    argv = [sys.executable, "-m", "patchswap.cli", "transfer", "--method.name", "ips"]
    for key, value in _overrides(run_dir, str(tiny_run[0])).items():
        argv += [f"--{key}", value]
    killed = subprocess.run(
        argv,
        env={**subprocess_env, "PATCHSWAP_FAULT_AT_STEP": str(steps + steps // 2)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run_dir / "summary.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "patchswap.cli", "transfer", "--resume", str(run_dir)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(reference_dir / "checkpoints" / "last.safetensors")
    b = load_file(run_dir / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"] == reference["test"]


@needs_mnist
def test_transfer_weights_say_what_they_hold(segment_ips_run):
    from patchswap.runs import read_weights_metadata

    run_dir = segment_ips_run[0]
    meta = read_weights_metadata(run_dir / "checkpoints" / "best.safetensors")
    assert meta["task"] == "segment" and meta["method"] == "ips" and meta["architecture"].startswith("fcn")
    assert len(meta["classes"]) == meta["num_classes"] and meta["input_size"][0] == 1
    assert len(meta["mean"]) == len(meta["std"]) == 1
