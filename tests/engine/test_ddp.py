"""Distributed data-parallel training with pairs: sharding, exact sharded evaluation, a real 2-process run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import assert_same_training_means

from patchswap.data import build_data
from patchswap.engine.loaders import IGNORE_LABEL, EvalShardSampler, IndexedDataset, PatchswapDataModule
from patchswap.sampling import dataset_labels


def _datamodule(bundle, world: int, rank: int, pairs: bool = True) -> PatchswapDataModule:
    dm = PatchswapDataModule(bundle, batch_size=16, eval_batch_size=50, seed=3, pairs=pairs)
    dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)  # what Lightning sets before loaders
    return dm


@pytest.fixture(scope="module")
def bundle():
    return build_data("digits", val_split=0.1)


def test_ranks_split_the_single_process_pairs_without_splitting_any(bundle):
    labels = dataset_labels(bundle.train)
    seen, counts = [], []
    for rank in range(2):
        sampler = _datamodule(bundle, 2, rank).make_train_sampler()
        sampler.set_epoch(4)
        batches = list(sampler)
        counts.append(len(batches))
        for batch in batches:
            a, p = np.array(batch[:16]), np.array(batch[16:])
            assert np.all(labels[a] == labels[p]), "a pair never straddles ranks or batch halves"
            seen += list(zip(a.tolist(), p.tolist(), strict=True))
    assert counts[0] == counts[1], "every rank runs the same number of steps"
    assert len(seen) == len(set(seen)), "no pair is seen twice in an epoch"
    # Pairs depend on seed and epoch only: with drop_last, the ranks together see exactly the first
    # (batches x ranks x pairs per batch) pairs that one process draws for that epoch.
    expected = {tuple(p) for p in _all_pairs(bundle, 4)[: counts[0] * 2 * 16]}
    assert set(seen) == expected


def _all_pairs(bundle, epoch):
    return _datamodule(bundle, 1, 0).make_train_sampler().pairs(epoch)


@pytest.mark.parametrize(("n", "replicas", "batch"), [(144, 2, 50), (7, 3, 2), (1, 4, 8), (100, 1, 32)])
def test_eval_shards_count_every_image_once_and_mark_padding(n, replicas, batch):
    per_rank = []
    for rank in range(replicas):
        idx = [i for b in EvalShardSampler(n, batch, num_replicas=replicas, rank=rank) for i in b]
        per_rank.append(idx)
    assert len({len(x) for x in per_rank}) == 1, "same number of samples (and batches) on every rank"
    real = sorted(i for x in per_rank for i in x if i >= 0)
    assert real == list(range(n))
    assert all(0 <= ~i < n for x in per_rank for i in x if i < 0)


def test_padding_rows_get_the_ignore_label():
    bundle = build_data("digits", val_split=0.1)
    ds = IndexedDataset(bundle.val)
    images, labels, index = ds.__getitems__([0, 1, ~2])
    assert images.shape[0] == 3 and index.tolist() == [0, 1, 2]
    assert labels[2].item() == IGNORE_LABEL and labels[0].item() == int(bundle.val.targets[0])


def test_eval_metrics_ignore_padding():
    from patchswap.engine.module import _EvalMetrics

    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    m = _EvalMetrics(2)
    m.update(logits, torch.tensor([0, 0, IGNORE_LABEL]))
    ref = _EvalMetrics(2)
    ref.update(logits[:2], torch.tensor([0, 0]))
    assert m.acc.compute() == ref.acc.compute() == 0.5
    assert torch.isclose(m.nll.compute(), ref.nll.compute())
    assert torch.isclose(m.ece.compute(), ref.ece.compute())


DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
DDP_EPOCHS, DDP_TRAIN = 2, 320  # 320 images, 32 per step on each of 2 ranks: 5 steps per epoch
# ips (in-batch pairs): 340 images, 33-35 per class, 8 groups of 4 each; 8 classes x 4 per batch on each of
# 2 ranks: 5 steps per epoch (320 would leave 79 groups, 9 batches, 4 steps per rank)
DDP_IPS_TRAIN = 340
CLI = [sys.executable, "-m", "patchswap.cli", "train"]


def _run_ddp(argv, env, timeout=280):
    """Run a 2-process command; its own session, so a hung rank can be killed with the launcher."""
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)  # waits for every rank: they share the pipes
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"a rank hung: {err[-3000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, tiny_argv, subprocess_env):
    """One uninterrupted 2-process IPS run: its run dir."""
    run_dir = tmp_path_factory.mktemp("ddp") / "ddp"
    argv = tiny_argv(run_dir, trainer__epochs=str(DDP_EPOCHS), data__train_subset=str(DDP_IPS_TRAIN))
    proc = _run_ddp([*CLI, *argv, *DDP], subprocess_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.timeout(300)
def test_two_process_ddp_run_trains_checkpoints_once_and_evaluates_the_same_in_one_process(ddp_run):
    from patchswap.engine import evaluate

    run_dir = ddp_run
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.ckpt",
        "best.safetensors",
        "last.ckpt",
        "last.safetensors",
    ]
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1], "one row per epoch, written by rank 0 only"
    steps_per_epoch = 5
    assert int(rows[-1]["step"]) == DDP_EPOCHS * steps_per_epoch
    summary = json.loads((run_dir / "summary.json").read_text())
    # The val accuracy of the last epoch was computed by 2 ranks on sharded, padded batches; in one
    # process the same checkpoint must give exactly the same figure.
    single = evaluate(run_dir / "checkpoints" / "last.ckpt", split="val")
    assert single["acc"] == pytest.approx(float(rows[-1]["val/acc"]), abs=1e-6)
    assert summary["test"]["acc"] == pytest.approx(evaluate(run_dir)["acc"], abs=1e-6)


@pytest.mark.timeout(300)
def test_ddp_killed_mid_epoch_resumes_every_rank_to_the_uninterrupted_weights(
    ddp_run, tmp_path, tiny_argv, subprocess_env
):
    """Both ranks die by SIGKILL at step 9 (epoch 2, one step after the step-8 checkpoint, which only
    rank 0 wrote); the resumed 2-process run ends with the uninterrupted run's weights."""
    from safetensors.torch import load_file

    from patchswap.runs import load_checkpoint

    run_dir = tmp_path / "killed"
    argv = tiny_argv(
        run_dir,
        trainer__epochs=str(DDP_EPOCHS),
        data__train_subset=str(DDP_IPS_TRAIN),
        trainer__checkpoint_every_n_steps="4",
    )
    killed = _run_ddp([*CLI, *argv, *DDP], {**subprocess_env, "PATCHSWAP_FAULT_AT_STEP": "9"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 8)  # mid epoch 2: 3 of its 5 steps done
    done = _run_ddp([*CLI, "--resume", str(run_dir)], subprocess_env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(0, 5), (1, 10)]
    want, got = (load_file(d / "checkpoints" / "last.safetensors") for d in (ddp_run, run_dir))
    different = [k for k in want if not torch.equal(want[k], got[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


PSKD = ["--method", "pskd"]
DLB_OFFICIAL = ["--method", "dlb", "--dlb.form", "official"]


def _method_argv(tiny_argv, run_dir, method):
    # No validation: best.ckpt is then linked to each last.ckpt, under DDP and through the kills too.
    return [
        *CLI,
        *tiny_argv(run_dir, trainer__epochs="3", data__train_subset=str(DDP_TRAIN), data__val_split="0"),
        "--trainer.checkpoint_every_n_steps",
        "4",
        *method,
        *DDP,
    ]


@pytest.fixture(scope="module")
def uninterrupted_method_runs(tmp_path_factory, tiny_argv, subprocess_env):
    """One uninterrupted 3-epoch 2-process run per method, made when first asked for: its run dir."""
    runs: dict[str, Path] = {}

    def get(method: list[str]) -> Path:
        key = " ".join(method)
        if key not in runs:
            run_dir = tmp_path_factory.mktemp("whole") / "run"
            proc = _run_ddp(_method_argv(tiny_argv, run_dir, method), subprocess_env)
            assert proc.returncode == 0, proc.stderr[-3000:]
            runs[key] = run_dir
        return runs[key]

    return get


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("method", "kill_at", "resume_point"),
    [(PSKD, 9, (1, 8)), (DLB_OFFICIAL, 9, (1, 8)), (DLB_OFFICIAL, 6, (0, 5))],
    ids=["pskd-mid-epoch", "dlb-official-mid-epoch", "dlb-official-epoch-end"],
)
def test_ddp_killed_run_resumes_each_ranks_method_state(
    method, kill_at, resume_point, uninterrupted_method_runs, tmp_path, tiny_argv, subprocess_env
):
    """PS-KD's predictions written so far in the epoch and DLB's kept batch differ between ranks (DDP must
    not overwrite a method's buffers with rank 0's), and rank 0 alone writes the checkpoint: each rank
    must get its own back. Three epochs, killed in the second (step 9, after the step-8 checkpoint), so
    the third epoch's targets read what the second wrote (PS-KD) and the kept batch carries on (DLB),
    or right after the first epoch's end (DLB's official memory carries across epochs); the weights
    must equal the uninterrupted run's."""
    from safetensors.torch import load_file

    from patchswap.engine.seeded import METHOD_RANKS_KEY
    from patchswap.runs import load_checkpoint

    whole, killed_dir = uninterrupted_method_runs(method), tmp_path / "killed"
    if method == PSKD:  # every rank's rows merged at each epoch's end: all 320 carry the last epoch
        stamps = load_checkpoint(whole / "checkpoints" / "last.ckpt")["state_dict"]["method.written_epoch"]
        assert stamps.tolist() == [2] * DDP_TRAIN
    env = {**subprocess_env, "PATCHSWAP_FAULT_AT_STEP": str(kill_at)}
    killed = _run_ddp(_method_argv(tiny_argv, killed_dir, method), env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt = load_checkpoint(killed_dir / "checkpoints" / "last.ckpt")
    assert (ckpt["epoch"], ckpt["global_step"]) == resume_point
    assert len(ckpt[METHOD_RANKS_KEY]) == 2 and all(s is not None for s in ckpt[METHOD_RANKS_KEY])
    done = _run_ddp([*CLI, "--resume", str(killed_dir)], subprocess_env)
    assert done.returncode == 0, done.stderr[-3000:]
    want, got = (load_file(d / "checkpoints" / "last.safetensors") for d in (whole, killed_dir))
    different = [k for k in want if not torch.equal(want[k], got[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert_same_training_means(whole, killed_dir)  # inside an epoch: each rank's running sums came back
    for run_dir in (whole, killed_dir):
        assert (run_dir / "checkpoints" / "best.ckpt").samefile(run_dir / "checkpoints" / "last.ckpt")


FAILING_WRITE = r"""
import sys
import patchswap.engine.checkpoint as ckpt_io
from patchswap.cli import main

real, calls = ckpt_io.atomic_write, []

def flaky(path, write):  # only rank 0 writes: its second checkpoint finds the disk full
    calls.append(path)
    if len(calls) == 2:
        raise OSError(28, "No space left on device")
    real(path, write)

ckpt_io.atomic_write = flaky
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.timeout(120)
def test_ddp_failed_checkpoint_write_ends_every_rank_with_the_clear_error(
    tmp_path, tiny_argv, subprocess_env
):
    """Rank 0's write fails while rank 1 waits at Lightning's barrier after the save: rank 0 takes
    it down, and the run exits at once with status 74 and the message that names the file."""
    from patchswap.runs import load_checkpoint

    script = tmp_path / "failing_write.py"
    script.write_text(FAILING_WRITE)
    run_dir = tmp_path / "run"
    argv = tiny_argv(
        run_dir,
        trainer__epochs="1",
        data__train_subset=str(DDP_IPS_TRAIN),
        trainer__checkpoint_every_n_steps="2",
    )
    proc = _run_ddp([sys.executable, str(script), "train", *argv, *DDP], subprocess_env, timeout=100)
    assert proc.returncode == 74, proc.stderr[-3000:]
    assert "No space left on device" in proc.stderr and "intact" in proc.stderr
    assert "Connection closed" not in proc.stderr, "rank 1 was left to find rank 0 gone"
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2


PSKD_MERGE = r"""
import os, sys, torch, torch.distributed as dist
import torch.multiprocessing as mp
from patchswap.methods import create_method

def worker(rank, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    m = create_method("pskd", num_samples=6, num_classes=3)
    # epoch 1: rank 0 saw samples 0 and 2, rank 1 saw 1 and 2; sample 5 was seen in epoch 0 by rank 0 only
    if rank == 0:
        m.predictions[5] = torch.tensor([1.0, 0.0, 0.0]).half(); m.written_epoch[5] = 0
    rows = [0, 2] if rank == 0 else [1, 2]
    for r in rows:
        m.predictions[r] = torch.tensor([0.2 + rank * 0.4, 0.8 - rank * 0.4, 0.0]).half()
        m.written_epoch[r] = 1
    m.on_epoch_end(1)
    torch.save({"p": m.predictions, "e": m.written_epoch}, f"{out}/r{rank}.pt")
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1],), nprocs=2)
"""


def test_pskd_merges_predictions_across_ranks(tmp_path, subprocess_env):
    import random

    script = tmp_path / "merge.py"
    script.write_text(PSKD_MERGE)
    port = str(random.randint(20000, 40000))
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), port], env=subprocess_env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt") for r in (0, 1))
    # Rows written this epoch are identical on every rank afterwards; older rows are left alone.
    assert torch.equal(r0["p"][:5], r1["p"][:5]) and torch.equal(r0["e"][:5], r1["e"][:5])
    p, e = r0["p"].float(), r0["e"]
    assert e.tolist() == [1, 1, 1, -1, -1, 0] and r1["e"][5].item() == -1
    assert torch.allclose(p[0], torch.tensor([0.2, 0.8, 0.0]), atol=1e-3)  # written by rank 0 only
    assert torch.allclose(p[1], torch.tensor([0.6, 0.4, 0.0]), atol=1e-3)  # written by rank 1 only
    assert torch.allclose(p[2], torch.tensor([0.4, 0.6, 0.0]), atol=1e-3)  # both ranks: averaged
    assert torch.allclose(p[5], torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)
