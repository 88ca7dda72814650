"""End to end: a tiny run's directory, determinism, refusing to overwrite, evaluate, kill and resume."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from patchswap.engine import RunError, evaluate, resume, train
from patchswap.engine.config import load_config
from patchswap.engine.resuming import resume_config
from patchswap.models import create_model
from patchswap.runs import CheckpointError, load_checkpoint, resolve_run_path

pytestmark = pytest.mark.usefixtures("single_thread")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _weights(run_dir: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"{name}.safetensors")


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


# -- what a run leaves behind ------------------------------------------------------------------------
def test_run_dir_holds_everything(tiny_run):
    run_dir, _ = tiny_run
    for name in ("config.yaml", "metrics.csv", "summary.json", "curves.png"):
        assert (run_dir / name).is_file(), name
    for name in ("last.ckpt", "best.ckpt", "last.safetensors", "best.safetensors"):
        assert (run_dir / "checkpoints" / name).is_file(), name
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.rglob("*.tmp")), "no temporary files may be left"
    # The saved config reruns the same run.
    assert load_config([run_dir / "config.yaml"]).trainer.run_dir == str(run_dir)


def test_metrics_csv_has_one_row_per_epoch(tiny_run, tiny_sizes):
    run_dir, _ = tiny_run
    rows = _rows(run_dir)
    steps = tiny_sizes["train"] // tiny_sizes["batch"]
    assert [int(r["epoch"]) for r in rows] == list(range(tiny_sizes["epochs"]))
    assert [int(r["step"]) for r in rows] == [steps * (e + 1) for e in range(tiny_sizes["epochs"])]
    for r in rows:
        assert float(r["train/loss"]) > 0
        assert 0.0 <= float(r["val/acc"]) <= 1.0
        assert float(r["train/images_per_s"]) > 0
        assert 0.0 <= float(r["train/swap_fraction"]) <= 0.75
    # Training learns something even in three tiny epochs.
    assert float(rows[-1]["train/loss"]) < float(rows[0]["train/loss"])


def test_tensorboard_has_every_epoch_value_of_metrics_csv_at_the_epochs_step(tiny_run):
    """Training means, lr and throughput reach TensorBoard (published once an epoch, not through
    ``self.log``) at the same step as the validation values Lightning logs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tiny_run
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    rows = _rows(run_dir)
    keys = [k for k in rows[0] if k not in ("epoch", "step")]
    assert {"train/loss", "train/acc", "train/kd", "lr", "train/images_per_s", "val/acc"} <= set(keys)
    assert set(keys) <= tags, f"not in TensorBoard: {set(keys) - tags}"
    for key in keys:
        points = {e.step: e.value for e in events.Scalars(key)}
        # Lightning logs an epoch's values at its last step counted from 0: metrics.csv's step less one.
        for r in rows:
            step = int(r["step"]) - 1
            assert step in points, (key, sorted(points), step)
            assert points[step] == pytest.approx(float(r[key]), rel=1e-5, abs=1e-6), key
    assert [e.value for e in events.Scalars("epoch")][-1] == len(rows) - 1


def test_summary(tiny_run, tiny_sizes):
    run_dir, summary = tiny_run
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    assert summary["method"] == "ips" and summary["model"] == "resnet8" and summary["seed"] == 0
    assert summary["epochs_run"] == tiny_sizes["epochs"]
    assert 1 <= summary["best_epoch"] <= tiny_sizes["epochs"]
    assert summary["selected_on"] == "val/acc"
    assert 0.0 < summary["val"]["acc"] <= 1.0 and 0.0 < summary["test"]["acc"] <= 1.0
    assert summary["test"]["acc"] > 0.2  # well above the 10% of chance on 10 digits
    assert {"nll", "ece"} <= set(summary["test"])
    assert summary["train_images_per_s"] > 0
    # The best epoch is the one with the highest val/acc in metrics.csv.
    accs = [float(r["val/acc"]) for r in _rows(run_dir)]
    assert accs[summary["best_epoch"] - 1] == max(accs)
    assert summary["val"]["acc"] == pytest.approx(max(accs), abs=1e-6)
    assert summary["best_checkpoint"] == "checkpoints/best.ckpt"  # relative to the run directory
    best = resolve_run_path(run_dir, summary["best_checkpoint"])
    assert load_checkpoint(best)["epoch"] == summary["best_epoch"] - 1


@pytest.mark.parametrize("which", ["last", "best"])
def test_safetensors_are_the_checkpoint_weights(tiny_run, which):
    run_dir, _ = tiny_run
    ckpt = load_checkpoint(run_dir / "checkpoints" / f"{which}.ckpt")
    from_ckpt = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    a = create_model("resnet8", 10, in_chans=1)
    a.load_state_dict(load_file(run_dir / "checkpoints" / f"{which}.safetensors"))
    b = create_model("resnet8", 10, in_chans=1)
    b.load_state_dict(from_ckpt)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_a, out_b = a.eval()(x), b.eval()(x)
    assert torch.equal(out_a, out_b)
    assert not torch.equal(out_a, create_model("resnet8", 10, in_chans=1).eval()(x))  # trained, not fresh


# -- determinism -------------------------------------------------------------------------------------
def test_same_seed_gives_identical_weights_and_another_seed_does_not(tiny_run, tiny_overrides, tmp_path):
    run_dir, summary = tiny_run
    again = train(load_config(None, tiny_overrides(tmp_path / "again")))
    _assert_same_tensors(_weights(run_dir), _weights(tmp_path / "again"))
    assert again["test"] == summary["test"]
    assert [r["train/loss"] for r in _rows(run_dir)] == [r["train/loss"] for r in _rows(tmp_path / "again")]

    train(load_config(None, tiny_overrides(tmp_path / "seed1", trainer__seed="1")))
    a, b = _weights(run_dir), _weights(tmp_path / "seed1")
    assert a.keys() == b.keys()
    assert not any(torch.equal(a[k], b[k]) for k in a if k.endswith("weight") and a[k].dim() > 1)


# -- refusing and failing clearly ----------------------------------------------------------------------
def test_training_into_an_existing_run_refuses_and_names_resume(tiny_run, tiny_overrides):
    run_dir, _ = tiny_run
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(RunError) as e:
        train(load_config(None, tiny_overrides(run_dir)))
    assert "--resume" in str(e.value) and str(run_dir) in str(e.value)
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before


def test_resume_without_last_checkpoint_is_a_clear_error(tmp_path, tiny_overrides):
    run_dir = tmp_path / "early"
    run_dir.mkdir()
    load_config(None, tiny_overrides(run_dir)).dump(run_dir / "config.yaml")
    with pytest.raises(RunError) as e:
        resume(run_dir)
    assert "nothing to resume" in str(e.value) and "last.ckpt" in str(e.value)
    with pytest.raises(RunError, match="not a run directory"):
        resume(tmp_path / "nowhere")


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_more_epochs_on_resume_is_said_out_loud_and_refused_for_onecycle(tmp_path, tiny_overrides, schedule):
    run_dir = tmp_path / schedule
    run_dir.mkdir()
    saved = load_config(None, tiny_overrides(run_dir, optim__schedule=schedule))
    saved.dump(run_dir / "config.yaml")
    epochs = saved.trainer.epochs
    longer = {"trainer.epochs": str(epochs + 3)}
    if schedule == "onecycle":  # OneCycleLR's total steps are fixed: it would fail past the old end
        with pytest.raises(RunError, match="onecycle.*cannot be lengthened") as e:
            resume_config(run_dir, None, longer, load=load_config, command="train")
        assert "Resume without --trainer.epochs" in str(e.value) and str(run_dir / "config.yaml") in str(
            e.value
        )
    else:
        with pytest.warns(UserWarning, match=r"cosine learning rate .* not the run a fresh"):
            cfg = resume_config(run_dir, None, longer, load=load_config, command="train")
        assert cfg.trainer.epochs == epochs + 3
    with warnings.catch_warnings():  # the same length: no note, no error
        warnings.simplefilter("error")
        resume_config(run_dir, None, {"trainer.epochs": str(epochs)}, load=load_config, command="train")
    if schedule == "cosine":  # nothing scaled by the length (constant lr, ce): no note either
        plain = tmp_path / "constant"
        plain.mkdir()
        load_config(None, tiny_overrides(plain, method="ce", optim__schedule="constant")).dump(
            plain / "config.yaml"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            resume_config(plain, None, longer, load=load_config, command="train")
        ramp = tmp_path / "ramp"
        ramp.mkdir()
        overrides = tiny_overrides(ramp, method="ips", optim__schedule="constant", ips__alpha_schedule="ramp")
        load_config(None, overrides).dump(ramp / "config.yaml")
        with pytest.warns(UserWarning, match="IPS's alpha_schedule ramp"):
            resume_config(ramp, None, longer, load=load_config, command="train")


def test_resume_from_a_truncated_checkpoint_says_so(tiny_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run[0], run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CheckpointError) as e:
        resume(run_dir)
    assert "corrupt or truncated" in str(e.value) and str(last) in str(e.value)


# -- evaluate ----------------------------------------------------------------------------------------
def test_evaluate_reproduces_the_summary(tiny_run):
    run_dir, summary = tiny_run
    res = evaluate(run_dir)
    assert res["split"] == "test" and res["checkpoint"].endswith("best.ckpt")
    assert res["acc"] == pytest.approx(summary["test"]["acc"], abs=1e-7)
    assert res["nll"] == pytest.approx(summary["test"]["nll"], rel=1e-5)
    assert json.loads((run_dir / "eval-test.json").read_text())["acc"] == res["acc"]
    val = evaluate(run_dir / "checkpoints" / "best.ckpt", split="val")
    assert val["acc"] == pytest.approx(summary["val"]["acc"], abs=1e-7)
    with pytest.raises(CheckpointError, match="neither a run directory nor a checkpoint"):
        evaluate(run_dir / "nothing-here")


def test_validating_every_second_epoch_leaves_no_stale_val_rows(tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    summary = train(
        load_config(None, tiny_overrides(run_dir, trainer__epochs="4", trainer__val_every_n_epochs="2"))
    )
    rows = _rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [bool(r["val/acc"]) for r in rows] == [False, True, False, True]
    best = max(float(rows[1]["val/acc"]), float(rows[3]["val/acc"]))
    assert summary["val"]["acc"] == pytest.approx(best, abs=1e-6)


def test_without_validation_every_epoch_end_links_best_even_when_validating_every_second_epoch(
    tiny_overrides, tmp_path
):
    """Without a validation split there is no validation to wait for: best.ckpt follows last.ckpt at
    every epoch's end whatever ``val_every_n_epochs`` says (Lightning alone would defer it forever)."""
    run_dir = tmp_path / "run"
    over = tiny_overrides(run_dir, data__val_split="0", trainer__epochs="2", trainer__val_every_n_epochs="2")
    summary = train(load_config(None, over))
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "best.ckpt").samefile(ckpts / "last.ckpt")
    assert summary["best_checkpoint"] == "checkpoints/best.ckpt" and summary["best_epoch"] == 2


# -- kill and resume -----------------------------------------------------------------------------------
def test_killed_run_resumes_to_exactly_the_uninterrupted_weights(
    tiny_run, tiny_argv, tiny_sizes, subprocess_env, tmp_path
):
    """A real SIGKILL in the middle of epoch 2, then --resume in a fresh process: bit-identical result."""
    reference_dir, reference = tiny_run
    run_dir = tmp_path / "killed"
    steps = tiny_sizes["train"] // tiny_sizes["batch"]
    fault_step = steps + steps // 2  # halfway through the second epoch
    cmd = [sys.executable, "-m", "patchswap.cli", "train"]

    killed = subprocess.run(
        [*cmd, *tiny_argv(run_dir)],
        cwd=tmp_path,
        env={**subprocess_env, "PATCHSWAP_FAULT_AT_STEP": str(fault_step)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    ckpt = load_checkpoint(last)
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, steps)  # the epoch-1 checkpoint, complete
    assert not (run_dir / "summary.json").exists()
    assert [r["epoch"] for r in _rows(run_dir)] == ["0"]

    resumed = subprocess.run(
        [*cmd, "--resume", str(run_dir)],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "test       acc" in resumed.stdout

    _assert_same_tensors(_weights(reference_dir), _weights(run_dir))
    _assert_same_tensors(_weights(reference_dir, "best"), _weights(run_dir, "best"))
    # metrics.csv keeps the killed process's first epoch and the resumed epochs, matching the reference.
    rows, ref_rows = _rows(run_dir), _rows(reference_dir)
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref_rows] == ["0", "1", "2"]
    for key in ("step", "train/loss", "train/acc", "train/swap_fraction", "lr", "val/acc"):
        assert [r[key] for r in rows] == [r[key] for r in ref_rows], key
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] == tiny_sizes["epochs"]
    assert summary["test"] == reference["test"] and summary["best_epoch"] == reference["best_epoch"]
    assert not list(run_dir.rglob("*.tmp"))


def test_a_run_validating_every_second_epoch_resumes_from_the_last_epoch_end(
    tiny_overrides, tiny_argv, tiny_sizes, subprocess_env, tmp_path
):
    """last.ckpt is written at every epoch end, not only on validation epochs: a kill in the fourth epoch
    (after the third, not validated) resumes from the third's end, and the result is the uninterrupted one. A
    checkpoint written at validation (best.ckpt; last.ckpt of older runs) resumes at that epoch's end
    without losing or faking its metrics row."""
    every2 = {"trainer__epochs": "4", "trainer__val_every_n_epochs": "2"}
    reference_dir = tmp_path / "reference"
    train(load_config(None, tiny_overrides(reference_dir, **every2)))
    run_dir = tmp_path / "killed"
    steps = tiny_sizes["train"] // tiny_sizes["batch"]
    cmd = [sys.executable, "-m", "patchswap.cli", "train"]
    killed = subprocess.run(
        [*cmd, *tiny_argv(run_dir, **every2)],
        env={**subprocess_env, "PATCHSWAP_FAULT_AT_STEP": str(3 * steps + steps // 2)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert (ckpt["epoch"], ckpt["global_step"]) == (2, 3 * steps)  # third epoch done, not validated
    assert [r["epoch"] for r in _rows(run_dir)] == ["0", "1", "2"]

    # An old-style resume point too: the copy of the run restarts from its validation-time checkpoint.
    val_time = tmp_path / "from-best"
    shutil.copytree(run_dir, val_time)
    shutil.copy(val_time / "checkpoints" / "best.ckpt", val_time / "checkpoints" / "last.ckpt")
    for resumed_dir in (run_dir, val_time):
        resumed = subprocess.run(
            [*cmd, "--resume", str(resumed_dir)],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        _assert_same_tensors(_weights(reference_dir), _weights(resumed_dir))
        rows, ref_rows = _rows(resumed_dir), _rows(reference_dir)
        assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
        for key in ("step", "train/loss", "train/acc", "lr", "val/acc"):
            assert [r[key] for r in rows] == [r[key] for r in ref_rows], (resumed_dir.name, key)
        assert all(float(r["train/images_per_s"]) > 0 for r in rows), "no empty row for a replayed epoch end"


def test_one_seed_starts_every_method_from_the_same_weights(tiny_overrides, tmp_path):
    """What makes a per-seed (paired) comparison of methods meaningful in compare's report."""
    from patchswap.engine.training import ClassificationRun

    states = {}
    for method in ("ce", "ips", "cskd", "label_smoothing"):
        run = ClassificationRun(
            load_config(None, tiny_overrides(tmp_path / method, method=method, trainer__seed="3"))
        )
        states[method] = run.model.state_dict()
    for state in states.values():
        _assert_same_tensors(states["ce"], state)
    other = ClassificationRun(
        load_config(None, tiny_overrides(tmp_path / "s4", trainer__seed="4"))
    ).model.state_dict()
    assert not torch.equal(other["conv1.weight"], states["ce"]["conv1.weight"])


def test_resume_does_not_warn_that_the_checkpoint_directory_is_not_empty(tiny_run, tmp_path):
    """Issue 18: Lightning's "Checkpoint directory ... exists and is not empty" on every resume is
    noise: the folder is the run's own."""
    import warnings

    run_dir = tmp_path / "again"
    shutil.copytree(tiny_run[0], run_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resume(run_dir, {"trainer.progress_bar": "false"})
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "exists and is not empty" in m], said


def test_safetensors_weights_say_what_they_hold(tiny_run):
    """Issue 18: the weights file alone names the architecture, classes, input size, normalisation
    and method."""
    from patchswap.runs import read_weights_metadata

    run_dir, summary = tiny_run
    cfg = load_config([run_dir / "config.yaml"])
    for name in ("best", "last"):
        meta = read_weights_metadata(run_dir / "checkpoints" / f"{name}.safetensors")
        assert meta["format"] == "pt"
        assert meta["architecture"] == cfg.model.name and meta["method"] == cfg.method
        assert meta["classes"] == [str(i) for i in range(10)] and meta["num_classes"] == 10
        assert meta["input_size"] == [1, 8, 8] and meta["model_kwargs"] == {}
        assert len(meta["mean"]) == len(meta["std"]) == 1 and meta["std"][0] > 0
        # and the file rebuilds the network it names
        model = create_model(meta["architecture"], meta["num_classes"], in_chans=meta["input_size"][0])
        model.load_state_dict(load_file(run_dir / "checkpoints" / f"{name}.safetensors"))


@pytest.mark.parametrize("pairing", ["half", "in_batch"])
def test_ips_at_ces_cost_sees_as_many_images_as_ce(pairing, tiny_overrides, tiny_sizes, tmp_path):
    """Issue 17: pairing half / in_batch forward data.batch_size images per step, as many steps as ce."""
    run = tmp_path / pairing
    summary = train(
        load_config(None, tiny_overrides(run, method="ips", trainer__epochs="1", ips__pairing=pairing))
    )
    plain_epoch = tiny_sizes["train"] // tiny_sizes["batch"] * tiny_sizes["batch"]  # ce's, drop_last
    assert summary["images_seen"] == plain_epoch
    assert 0.0 < float(_rows(run)[0]["train/swap_fraction"])  # pairs still swap
