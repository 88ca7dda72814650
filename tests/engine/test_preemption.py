"""Preemption-proof training: exact mid-epoch resume after SIGKILL, signals, checkpoint policy, disk
faults, divergence, the run-directory policy and precision auto.

The kill-and-resume runs are tiny (200 digits, 6 steps per epoch, 3 epochs): each method is killed three
times in one chain -- right after a step checkpoint, at the last step of an epoch, in the middle of
an epoch -- each time resumed in a new process, and the final weights must equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from helpers import assert_same_training_means
from safetensors.torch import load_file

from patchswap.engine import RunError, resume, train
from patchswap.engine.config import load_config
from patchswap.engine.errors import (
    EXIT_HARD_INTERRUPT,
    EXIT_STOPPED,
    CheckpointWriteError,
    TrainingDiverged,
)
from patchswap.runs import CheckpointError, load_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS = 6  # 200 training images, 32 per batch (ips: in-batch pairs, 20 per class: 5 groups of 4 each)
SMALL = {"data__train_subset": "200", "trainer__precision": "32-true"}
CMD = [sys.executable, "-m", "patchswap.cli", "train"]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / "last.safetensors")


def _same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert_same_training_means(a, b)  # an epoch resumed inside averages all its steps, not those after
    seen = [json.loads((d / "summary.json").read_text())["images_seen"] for d in (a, b)]
    assert abs(seen[0] - seen[1]) <= 1, f"images seen: {seen} (the resumed epochs count what came before)"


def _run(argv: list[str], env: dict, fault: int | None = None, sig: str | None = None, **kw):
    env = dict(env)
    if fault is not None:
        env["PATCHSWAP_FAULT_AT_STEP"] = str(fault)
    if sig:
        env["PATCHSWAP_FAULT_SIGNAL"] = sig
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.parametrize("method", ["ce", "ips", "pskd", "dlb", "cskd", "cutmix"])
def test_sigkill_anywhere_resumes_to_the_uninterrupted_weights(
    method, tiny_overrides, tiny_argv, subprocess_env, tmp_path
):
    reference = tmp_path / "reference"
    train(load_config(None, tiny_overrides(reference, method=method, **SMALL)))  # no mid-epoch checkpoints

    run_dir = tmp_path / "killed"
    argv = [*CMD, *tiny_argv(run_dir, method=method, trainer__checkpoint_every_n_steps="4", **SMALL)]
    resume_argv = [*CMD, "--resume", str(run_dir)]
    # kill at step 5: right after the step-4 checkpoint (mid first epoch)
    # kill at step 12: the last step of epoch 2, before its epoch-end checkpoint -> back to step 8
    # kill at step 17: mid epoch 3, one step after the step-16 checkpoint
    for argv_now, fault, resumes_from in ((argv, 5, 4), (resume_argv, 12, 8), (resume_argv, 17, 16)):
        killed = _run(argv_now, subprocess_env, fault)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        assert ckpt["global_step"] == resumes_from
    done = _run(resume_argv, subprocess_env)
    assert done.returncode == 0, done.stderr[-3000:]
    _same(reference, run_dir)
    assert not list(run_dir.rglob("*.tmp"))


def _image_folder(root: Path) -> Path:
    """Two classes of 24 small PNGs: a folder dataset, decoded with random crops and flips."""
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(0)
    for c in range(2):
        (root / "train" / f"c{c}").mkdir(parents=True)
        for i in range(24):
            image = torch.randint(0, 256, (3, 20, 20), generator=g, dtype=torch.uint8)
            write_png(image, str(root / "train" / f"c{c}" / f"{i}.png"))
    return root


@pytest.mark.parametrize("workers", ["0", "2"])
def test_image_folder_run_killed_inside_an_epoch_resumes_exactly(
    workers, tiny_overrides, tiny_argv, subprocess_env, tmp_path
):
    """Crops and flips are drawn while a batch is decoded, in a worker or the main process: they are
    seeded per batch, so a resumed run (new workers, other prefetching) decodes what the first did."""
    folder = {
        "data__name": f"folder:{_image_folder(tmp_path / 'images')}",
        "data__image_size": "16",
        "data__batch_size": "8",
        "data__val_split": "0",
        "data__train_subset": "48",
        "data__num_workers": workers,
        "method": "ce",
        "trainer__precision": "32-true",
    }
    reference = tmp_path / "reference"
    train(load_config(None, tiny_overrides(reference, **folder)))
    run_dir = tmp_path / "killed"
    argv = [*CMD, *tiny_argv(run_dir, trainer__checkpoint_every_n_steps="2", **folder)]
    killed = _run(argv, subprocess_env, fault=9)  # 6 steps per epoch: inside the second, after step 8
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 8
    done = _run([*CMD, "--resume", str(run_dir)], subprocess_env)
    assert done.returncode == 0, done.stderr[-3000:]
    _same(reference, run_dir)
    ckpts = run_dir / "checkpoints"  # no validation: the best is the last epoch's checkpoint, linked
    assert (ckpts / "best.ckpt").samefile(ckpts / "last.ckpt")
    assert json.loads((run_dir / "summary.json").read_text())["best_checkpoint"] == "checkpoints/best.ckpt"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_overrides, single_thread):
    """An uninterrupted small IPS run (no mid-epoch checkpoints): its run dir."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train(load_config(None, tiny_overrides(run_dir, **SMALL)))
    return run_dir


def test_sigterm_checkpoints_that_step_exits_75_and_resumes_exactly(
    reference, tiny_argv, subprocess_env, tmp_path
):
    run_dir = tmp_path / "stopped"
    stopped = _run([*CMD, *tiny_argv(run_dir, **SMALL)], subprocess_env, fault=STEPS + 2, sig="SIGTERM")
    assert stopped.returncode == EXIT_STOPPED, stopped.stderr[-3000:]
    assert f"patchswap train --resume {run_dir}" in stopped.stderr
    assert "patchswap train: stopped by SIGTERM" in stopped.stderr  # a stop, not an error
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == STEPS + 2  # the step it was at, not the last epoch end
    done = _run([*CMD, "--resume", str(run_dir)], subprocess_env)
    assert done.returncode == 0, done.stderr[-3000:]
    _same(reference, run_dir)


def _start(argv: list[str], env: dict, err: Path) -> subprocess.Popen:
    """A training process in the background, its stderr in a file (a pipe nobody reads can fill up)."""
    with err.open("w") as f:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=f)


def _wait_until(done, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"never saw {what} (exit status {proc.wait()})")
        time.sleep(0.01)


def test_sigterm_from_outside_mid_run_exits_75_with_that_steps_checkpoint_and_resumes_exactly(
    reference, tiny_argv, subprocess_env, tmp_path
):
    """As a scheduler does it: SIGTERM from another process, at whatever moment the run has reached."""
    run_dir, err = tmp_path / "stopped", tmp_path / "stderr.txt"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = _start(
        [*CMD, *tiny_argv(run_dir, trainer__checkpoint_every_n_steps="2", **SMALL)], subprocess_env, err
    )
    _wait_until(last.exists, proc, "the first step checkpoint")  # step 2 of 18: training, handlers set
    os.kill(proc.pid, signal.SIGTERM)
    sent = time.monotonic()
    status = proc.wait(timeout=60)
    took = time.monotonic() - sent
    text = err.read_text()
    assert status == EXIT_STOPPED, text[-3000:]
    assert took < 30, f"{took:.1f} s from the signal to the exit"  # a step and a checkpoint write
    stopped = re.search(r"stopped by SIGTERM at step (\d+)", text)
    assert stopped, text[-3000:]
    step = int(stopped.group(1))
    assert 2 <= step < 3 * STEPS
    assert load_checkpoint(last)["global_step"] == step  # a checkpoint of the step it stopped at
    assert f"Continue with: patchswap train --resume {run_dir}" in text
    done = _run([*CMD, "--resume", str(run_dir)], subprocess_env)
    assert done.returncode == 0, done.stderr[-3000:]
    _same(reference, run_dir)


def test_a_second_sigint_stops_at_once_with_130(tiny_argv, subprocess_env, tmp_path):
    """The first SIGINT (sent by the run itself at step 6, the epoch's last) asks for a checkpoint
    after the epoch's validation; a second one, sent as soon as the first is acknowledged, exits at
    once, normally before that checkpoint."""
    run_dir, err = tmp_path / "run", tmp_path / "stderr.txt"
    env = {**subprocess_env, "PATCHSWAP_FAULT_AT_STEP": str(STEPS), "PATCHSWAP_FAULT_SIGNAL": "SIGINT"}
    proc = _start([*CMD, *tiny_argv(run_dir, **SMALL)], env, err)
    _wait_until(lambda: "SIGINT received" in err.read_text(), proc, "the first SIGINT acknowledged")
    sent = time.monotonic()
    while proc.poll() is None:  # until it exits (a signal that lands while Python is in C code waits)
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.01)
    took = time.monotonic() - sent
    text = err.read_text()
    assert proc.returncode == EXIT_HARD_INTERRUPT, text[-3000:]
    assert "second SIGINT: stopping now" in text and f"patchswap train --resume {run_dir}" in text
    assert took < 10, f"{took:.1f} s from the second SIGINT to the exit"
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():  # on a loaded machine the second SIGINT may land after the first one's checkpoint
        assert load_checkpoint(last)["global_step"] == STEPS  # ... which is then complete


def test_checkpoint_every_minutes_writes_step_checkpoints_by_the_clock(tiny_overrides, tmp_path, monkeypatch):
    """A clock that advances 30 s per step: with a 1-minute interval, steps 2 and 4 are checkpointed
    (step 6 is the epoch's last: its epoch-end checkpoint follows)."""
    from types import SimpleNamespace

    from patchswap.engine import guard

    now = [0.0]
    monkeypatch.setattr(guard, "time", SimpleNamespace(monotonic=lambda: now[0]))
    step_end = guard.RunGuard.on_train_batch_end

    def tick(self, *args, **kwargs):
        now[0] += 30.0
        return step_end(self, *args, **kwargs)

    monkeypatch.setattr(guard.RunGuard, "on_train_batch_end", tick)
    run_dir = tmp_path / "run"
    over = tiny_overrides(
        run_dir, trainer__checkpoint_every_minutes="1", trainer__keep_last_k="5", trainer__epochs="1", **SMALL
    )
    train(load_config(None, over))
    steps = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.ckpt"))
    assert steps == ["step-000000002.ckpt", "step-000000004.ckpt"]
    assert load_checkpoint(run_dir / "checkpoints" / steps[0])["global_step"] == 2


def test_on_nonfinite_skip_step_skips_the_bad_step_and_finishes(
    tiny_overrides, tmp_path, monkeypatch, capsys
):
    from patchswap.engine.module import ClassifierModule

    step = ClassifierModule.training_step

    def nan_at_step_3(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == 3 else loss

    monkeypatch.setattr(ClassifierModule, "training_step", nan_at_step_3)
    run_dir = tmp_path / "run"
    over = tiny_overrides(run_dir, trainer__on_nonfinite="skip_step", trainer__epochs="1", **SMALL)
    summary = train(load_config(None, over))
    assert summary["epochs_run"] == 1 and (run_dir / "summary.json").exists()
    skipped = [line for line in capsys.readouterr().err.splitlines() if "update is skipped" in line]
    assert len(skipped) == 1 and skipped[0].startswith("step 3:"), skipped
    weights = _weights(run_dir)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == STEPS


def test_sigint_at_an_epochs_last_step_stops_after_its_validation(tiny_argv, subprocess_env, tmp_path):
    run_dir = tmp_path / "stopped"
    stopped = _run([*CMD, *tiny_argv(run_dir, **SMALL)], subprocess_env, fault=STEPS, sig="SIGINT")
    assert stopped.returncode == EXIT_STOPPED, stopped.stderr[-3000:]
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, STEPS)
    assert (run_dir / "checkpoints" / "best.ckpt").exists()  # the epoch was validated before stopping


def test_keep_last_k_and_a_corrupt_last_checkpoint_offers_the_newest_intact_one(tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    over = tiny_overrides(
        run_dir, trainer__checkpoint_every_n_steps="2", trainer__keep_last_k="2", trainer__epochs="2", **SMALL
    )
    train(load_config(None, over))
    steps = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.ckpt"))
    assert steps == ["step-000000008.ckpt", "step-000000010.ckpt"]  # 12 is an epoch's last step: none
    last = run_dir / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.unlink()  # (a hard link to the newest step file at mid-epoch; replace, don't truncate in place)
    last.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as e:
        resume(run_dir)
    msg = str(e.value)
    assert "corrupt or truncated" in msg and str(last) in msg
    assert "--from-checkpoint step-000000010.ckpt" in msg
    summary = resume(run_dir, from_checkpoint="step-000000010.ckpt")
    assert summary["epochs_run"] == 2


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_stops_clearly(
    tiny_overrides, tmp_path, monkeypatch
):
    import patchswap.engine.checkpoint as ckpt_io

    real = ckpt_io.atomic_write
    calls = []

    def flaky(path, write):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, write)

    monkeypatch.setattr(ckpt_io, "atomic_write", flaky)
    run_dir = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as e:
        train(load_config(None, tiny_overrides(run_dir, trainer__checkpoint_every_n_steps="2", **SMALL)))
    assert "No space left on device" in str(e.value) and "intact" in str(e.value)
    assert e.value.exit_code == 74
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2


def test_a_nonfinite_loss_stops_at_its_step_and_keeps_the_last_finite_checkpoint(tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    over = tiny_overrides(run_dir, optim__lr="1e8", trainer__checkpoint_every_n_steps="1", **SMALL)
    with pytest.raises(TrainingDiverged) as e:
        train(load_config(None, over))
    msg = str(e.value)
    assert "at step" in msg and "learning rate" in msg and "precision" in msg
    assert e.value.exit_code == 65
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        state = load_checkpoint(last)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not (run_dir / "summary.json").exists()


def test_weights_an_update_overflowed_are_never_written_even_when_the_loss_was_finite(tmp_path):
    """A huge step can turn the weights infinite while the loss it came from was finite: the check that
    runs before every checkpoint write reads the weights too, and stops with the step and the advice."""
    from types import SimpleNamespace

    from patchswap.engine.config import TrainerSection
    from patchswap.engine.guard import RunGuard

    guard = RunGuard(tmp_path, TrainerSection(), resume_command="patchswap train --resume x")
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    trainer = SimpleNamespace(lightning_module=net, world_size=1, global_step=7, current_epoch=1)
    guard._track_loss(trainer, torch.tensor(0.5))  # the step's loss: finite
    guard._check_nonfinite(trainer, before_write=True)  # finite weights: nothing to say
    with torch.no_grad():
        net[1].running_var[0] = float("inf")  # a buffer counts as much as a weight
    guard._check_nonfinite(trainer)  # between writes only the loss is read (no sync per step)
    with pytest.raises(TrainingDiverged) as e:
        guard._check_nonfinite(trainer, before_write=True)
    msg = str(e.value)
    assert "weights became not finite at step 7" in msg and "(epoch 2)" in msg
    assert "no checkpoint was written before it" in msg and "optim.lr" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_the_finite_check_finds_one_bad_element_in_any_tensor_of_any_float_dtype(bad):
    from patchswap.engine.guard import _all_finite

    tensors = [torch.randn(4, 3), torch.randn(5, dtype=torch.float64), torch.randn(2, 2).bfloat16()]
    tensors.append(torch.full((3,), 65000.0, dtype=torch.float16))  # near fp16's max: a sum would overflow
    assert _all_finite(tensors) and _all_finite([])
    for i, t in enumerate(tensors):
        broken = [u.clone() for u in tensors]
        broken[i].view(-1)[-1] = bad
        assert not _all_finite(broken), f"a {bad} in tensor {i} ({t.dtype}) went unseen"


# -- the run directory ----------------------------------------------------------------------------
def test_a_finished_run_is_never_overwritten_without_overwrite(tiny_run, tiny_overrides, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run[0], run_dir)
    with pytest.raises(RunError) as e:
        train(load_config(None, tiny_overrides(run_dir, trainer__epochs="1")))
    assert "--resume" in str(e.value) and "--overwrite" in str(e.value)
    summary = train(load_config(None, tiny_overrides(run_dir, trainer__epochs="1", **SMALL)), overwrite=True)
    assert summary["epochs_run"] == 1


def test_unwritable_run_dir_fails_before_training_naming_the_folder(tiny_overrides, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(RunError) as e:
        train(load_config(None, tiny_overrides(blocker / "run")))
    assert str(blocker / "run") in str(e.value) and "--trainer.run_dir" in str(e.value)


def test_default_run_dir_gets_a_suffix_and_a_failed_start_leaves_nothing(
    tiny_overrides, tmp_path, monkeypatch
):
    from patchswap.engine.harness import free_run_dir

    monkeypatch.chdir(tmp_path)
    taken = tmp_path / "runs" / "x-s0"
    (taken / "checkpoints").mkdir(parents=True)
    (taken / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert free_run_dir(taken) == taken.with_name("x-s0-2")
    # a batch larger than the training set fails when the loader is made: no config-only folder is left
    over = tiny_overrides(tmp_path / "failed", data__batch_size="1000", **SMALL)
    with pytest.raises(ValueError):
        train(load_config(None, over))
    assert not (tmp_path / "failed").exists()


def test_resume_refuses_unsafe_overrides_and_never_rewrites_config_first(tiny_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run[0], run_dir)
    before = (run_dir / "config.yaml").read_text()
    for over, key in (({"method": "ce"}, "method"), ({"model.name": "resnet14"}, "model.name")):
        with pytest.raises(RunError) as e:
            resume(run_dir, over)
        assert key in str(e.value) and "trainer.epochs" in str(e.value)
        assert (run_dir / "config.yaml").read_text() == before
        if key == "method":  # the change is named alone, not with every option of the two methods
            assert "method: saved 'ips', given 'ce'" in str(e.value) and "ips.alpha" not in str(e.value)
    # a config.yaml rewritten by an older version (the second user story) no longer breaks --resume:
    (run_dir / "config.yaml").write_text(before.replace("name: resnet8", "name: resnet14"))
    summary = resume(run_dir)
    assert summary["method"] == "ips" and summary["model"] == "resnet8"
    assert "resnet8" in (run_dir / "config.yaml").read_text()


# -- precision --------------------------------------------------------------------------------------
@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_follows_the_cpu(native, monkeypatch):
    from patchswap.engine import harness

    monkeypatch.setattr(harness, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(harness, "_warned_bf16", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    value, _ = harness.resolve_precision("auto", "cpu")
    assert value == ("bf16-mixed" if native else "32-true")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        harness.resolve_precision("bf16-mixed", "cpu")
        harness.resolve_precision("bf16-mixed", "cpu")
    slow = [w for w in caught if "emulated" in str(w.message)]
    assert len(slow) == (0 if native else 1)  # once, naming the way out
    if slow:
        assert "auto" in str(slow[0].message) and "32-true" in str(slow[0].message)


def test_cpu_feature_detection_reads_proc_cpuinfo(monkeypatch, tmp_path):
    from patchswap.engine import harness

    real = Path.read_text
    for flags, expected in (
        ("fpu avx2 avx512f", False),
        ("fpu avx512_bf16", True),
        ("amx_bf16 amx_tile", True),
    ):
        monkeypatch.setattr(
            Path,
            "read_text",
            lambda self, *a, _f=flags, **k: (
                f"flags\t\t: {_f}\n" if str(self) == "/proc/cpuinfo" else real(self, *a, **k)
            ),
        )
        assert harness.cpu_has_native_bf16() is expected


def test_the_resolved_precision_is_saved_and_an_old_explicit_one_resumes(tiny_run, tiny_overrides, tmp_path):
    unpinned = {k: v for k, v in tiny_overrides(tmp_path / "x").items() if k != "trainer.precision"}
    assert load_config(None, unpinned).trainer.precision == "auto"  # the default (the tests pin 32-true)
    saved = load_config([tiny_run[0] / "config.yaml"])
    assert saved.trainer.precision in ("32-true", "bf16-mixed")  # resolved when the run started
