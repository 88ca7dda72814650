"""The run-directory and checkpoint format (patchswap.runs): locating, weights, configs, atomic writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import tiny_checkpoint, tiny_net
from safetensors.torch import load_file
from torch import nn

from patchswap.models import load_pretrained
from patchswap.runs import (
    CONFIG_KEY,
    RUN_CHECKPOINTS,
    CheckpointError,
    CheckpointNotFoundError,
    atomic_write,
    clean_key,
    find_checkpoint,
    load_checkpoint,
    locate_checkpoint,
    network_state,
    resolve_run_path,
    run_config_beside,
    run_dir_of,
    run_relative,
    save_weights,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "patchswap"


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


# -- the format's one home ---------------------------------------------------------------------------
def test_the_config_key_string_is_written_once_in_src():
    hits = [p for p in SRC.rglob("*.py") for _ in range(p.read_text().count('"patchswap_config"'))]
    assert hits == [SRC / "runs.py"]
    assert CONFIG_KEY == "patchswap_config"  # stored in every checkpoint ever written: never change it


def test_runs_and_its_users_below_the_engine_import_no_lightning():
    code = (
        "import sys, patchswap.runs, patchswap.methods.kd, patchswap.dense.models, patchswap.models\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')\n"
        "             or m.startswith(('patchswap.engine', 'patchswap.cli')))\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC.parent), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# -- atomic_write ------------------------------------------------------------------------------------
def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_write(path, lambda f: f.write(b"first"))
    atomic_write(path, lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_writer_that_fails_midway_leaves_the_old_file_and_no_temp(tmp_path, error):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"old complete checkpoint")

    def writer(f):
        f.write(b"half of the new")
        f.flush()
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, writer)
    assert path.read_bytes() == b"old complete checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    def writer(f):
        f.write(b"partial")
        raise OSError("boom")

    with pytest.raises(OSError, match="boom"):
        atomic_write(tmp_path / "new.ckpt", writer)
    assert list(tmp_path.iterdir()) == []


# -- load_checkpoint ---------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_checkpoint_says_so(tmp_path, keep):
    path = tmp_path / "last.ckpt"
    atomic_write(path, lambda f: torch.save(tiny_checkpoint(tiny_net()), f))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "corrupt or truncated" in msg and str(path) in msg
    assert "delete it and resume from another checkpoint" in msg


def test_garbage_is_corrupt(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "does not exist" in str(e.value)


def test_a_file_without_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(tiny_net().state_dict(), path)
    with pytest.raises(CheckpointError, match="not a patchswap/Lightning checkpoint"):
        load_checkpoint(path)


class _Code:
    """Pickled as a reference to code, which weights_only refuses."""


def test_weights_only_refuses_pickled_code_and_says_so(tmp_path):
    path = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {}, "extra": _Code()}, path)
    assert isinstance(load_checkpoint(path)["extra"], _Code)  # the engine's own files: allowed
    with pytest.raises(CheckpointError, match="objects other than tensors") as e:
        load_checkpoint(path, weights_only=True)
    assert "_Code" in str(e.value) and "corrupt" not in str(e.value)


# -- save_weights ------------------------------------------------------------------------------------
def test_save_weights_is_loadable_safetensors(tmp_path):
    model = tiny_net()
    tiny_checkpoint(model)  # non-trivial weights and BN statistics
    path = tmp_path / "w" / "last.safetensors"
    save_weights(model, path, metadata={"epoch": "3"})
    tensors = load_file(path)
    state = model.state_dict()
    assert set(tensors) == set(state)
    assert all(torch.equal(tensors[k], state[k]) for k in state)
    fresh = tiny_net()
    fresh.load_state_dict(tensors)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(fresh.eval()(x), model.eval()(x))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"epoch": "3"}
    assert [p.name for p in path.parent.iterdir()] == ["last.safetensors"]


# -- locating checkpoints ----------------------------------------------------------------------------
def test_a_run_directory_means_its_best_checkpoint_else_its_last(tmp_path):
    run = tmp_path / "run"
    last = _touch(run / "checkpoints" / "last.ckpt")
    assert locate_checkpoint(run) == last
    best = _touch(run / "checkpoints" / "best.ckpt")
    assert locate_checkpoint(run) == best
    assert locate_checkpoint(str(run)) == best
    assert locate_checkpoint(last) == last  # a file is taken as it is, wherever it is
    loose = _touch(tmp_path / "elsewhere" / "model.ckpt")
    assert locate_checkpoint(loose) == loose


def test_weights_metadata_round_trips_through_the_file(tmp_path):
    from patchswap.runs import read_weights_metadata, weights_metadata

    meta = weights_metadata(architecture="resnet8", classes=["cat", "dog"], mean=[0.5], skipped=None)
    assert meta == {"format": "pt", "architecture": "resnet8", "classes": '["cat", "dog"]', "mean": "[0.5]"}
    path = tmp_path / "w.safetensors"
    save_weights(torch.nn.Linear(2, 2), path, metadata=meta)
    assert read_weights_metadata(path) == {
        "format": "pt",
        "architecture": "resnet8",
        "classes": ["cat", "dog"],
        "mean": [0.5],
    }


def test_safetensors_count_only_when_asked_and_a_ckpt_wins_over_its_copy(tmp_path):
    run = tmp_path / "run"
    only = _touch(run / "checkpoints" / "best.safetensors")
    assert find_checkpoint(run) is None  # the default names: Lightning checkpoints only
    assert find_checkpoint(run, RUN_CHECKPOINTS) == only
    assert locate_checkpoint(run, RUN_CHECKPOINTS) == only
    ckpt = _touch(run / "checkpoints" / "best.ckpt")
    assert find_checkpoint(run, RUN_CHECKPOINTS) == ckpt
    _touch(run / "checkpoints" / "last.ckpt")
    assert find_checkpoint(run, RUN_CHECKPOINTS) == ckpt


def test_locating_nothing_says_what_was_looked_for(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as e:
        locate_checkpoint(tmp_path)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, CheckpointError)
    msg = str(e.value)
    assert str(tmp_path) in msg and "not a patchswap run directory" in msg
    assert "checkpoints/best.ckpt or checkpoints/last.ckpt" in msg
    with pytest.raises(FileNotFoundError, match="neither a run directory nor a checkpoint file"):
        locate_checkpoint(tmp_path / "nope")


def test_run_dir_of_a_checkpoint(tmp_path):
    assert run_dir_of(tmp_path / "run" / "checkpoints" / "best.ckpt") == tmp_path / "run"
    assert run_dir_of(tmp_path / "model.ckpt") is None


# -- network weights ---------------------------------------------------------------------------------
def test_network_state_keeps_the_model_entries_without_wrapper_prefixes():
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    state = {
        "model.conv.weight": a,
        "model._orig_mod.fc.bias": b,  # torch.compile'd network
        "model.block._orig_mod.bn.weight": c,  # a compiled submodule
        "method.buffer": torch.zeros(3),  # the method's state: not the network's
        "ema.model.conv.weight": torch.zeros(1),  # "model." elsewhere than at the start
    }
    net = network_state(state)
    assert list(net) == ["conv.weight", "fc.bias", "block.bn.weight"]
    assert net["conv.weight"] is a and net["fc.bias"] is b and net["block.bn.weight"] is c
    assert network_state({"method.x": a}) == {}
    assert clean_key("_orig_mod.layer1.0.conv.weight") == "layer1.0.conv.weight"


def test_a_compiled_networks_lightning_state_loads_into_a_fresh_network():
    holder = nn.Module()  # stands in for the LightningModule, which holds the network as self.model
    holder.model = torch.compile(tiny_net())  # compiling is lazy: nothing is compiled before a call
    keys = list(holder.state_dict())
    assert keys and all(k.startswith("model._orig_mod.") for k in keys)
    fresh = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    fresh.load_state_dict(network_state(holder.state_dict()))  # strict: every key matches
    for key, value in tiny_net().state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_load_pretrained_takes_a_compiled_runs_checkpoint(tmp_path):
    holder = nn.Module()
    holder.model = torch.compile(tiny_net())
    path = tmp_path / "compiled.ckpt"
    torch.save({"state_dict": holder.state_dict(), "epoch": 0}, path)
    fresh = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    load_pretrained(fresh, path)
    for key, value in tiny_net().state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


# -- a run's config beside its weights ---------------------------------------------------------------
def test_run_config_beside_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "resnet8"}}))
    weights = _touch(run / "checkpoints" / "best.safetensors")
    assert run_config_beside(weights) == {"model": {"name": "resnet8"}}
    assert run_config_beside(_touch(run / "model.safetensors")) == {"model": {"name": "resnet8"}}
    assert run_config_beside(_touch(tmp_path / "loose" / "model.safetensors")) is None
    (tmp_path / "loose" / "config.yaml").write_text("just text\n")  # not a mapping: no config
    assert run_config_beside(tmp_path / "loose" / "model.safetensors") is None


# -- paths in summary.json (issue 17) ----------------------------------------------------------------
def test_summary_paths_are_relative_to_the_run(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "r"
    best = _touch(run / "checkpoints" / "best.ckpt")
    assert run_relative(best, run) == "checkpoints/best.ckpt"
    monkeypatch.chdir(tmp_path)  # a relative run dir and the absolute path Lightning reports
    assert run_relative(best, Path("runs/r")) == "checkpoints/best.ckpt"
    assert run_relative(Path("runs/r/checkpoints/best.ckpt"), Path("runs/r")) == "checkpoints/best.ckpt"
    outside = tmp_path / "other" / "x.ckpt"
    assert run_relative(outside, run) == str(outside)


def test_summary_paths_resolve_in_both_the_new_and_the_old_form(tmp_path):
    run = tmp_path / "run"
    best = _touch(run / "checkpoints" / "best.ckpt")
    assert resolve_run_path(run, "checkpoints/best.ckpt") == best  # new: relative
    assert resolve_run_path(run, str(best)) == best  # old: absolute, on this machine
    # Old and committed from another machine: the absolute path is gone, the run's own file is found.
    stale = "/elsewhere/docs/results/run/checkpoints/best.ckpt"
    assert resolve_run_path(run, stale) == best
    gone = "/elsewhere/checkpoints/last.ckpt"  # and not in the run either: kept, so the error names it
    assert resolve_run_path(run, gone) == Path(gone)


def test_a_weights_file_given_for_a_checkpoint_says_what_to_pass(tmp_path):
    from safetensors.torch import save_file

    from patchswap.runs import CheckpointError, load_checkpoint

    path = tmp_path / "best.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="weights alone; pass the run directory or a .ckpt checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("links", [True, False], ids=["hard link", "no links: a copy"])
def test_link_over_makes_the_target_the_source_and_leaves_nothing_else(links, tmp_path, monkeypatch):
    from patchswap.runs import link_over

    source, target = tmp_path / "last.ckpt", tmp_path / "best.ckpt"
    source.write_bytes(b"new state")
    target.write_bytes(b"old state")
    if not links:

        def no_link(*args, **kwargs):
            raise OSError(1, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    link_over(source, target)
    assert target.read_bytes() == b"new state" and source.read_bytes() == b"new state"
    assert target.samefile(source) == links
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
