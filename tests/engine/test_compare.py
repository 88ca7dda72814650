"""patchswap compare: a study runs in resumable pieces, skips finished runs and tabulates honestly."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from patchswap.engine.compare import collect, load_study, restrict, run_study, write_report
from patchswap.engine.config import ConfigError

STUDY = """
set:
  data.name: digits
  data.train_subset: 240
  data.batch_size: 32
  model.name: resnet8
  trainer.epochs: 1
  trainer.accelerator: cpu
seeds: [0, 1]
out: runs
entries:
  ce: {method: ce}
  ips-p0:
    method: ips
    ips: {prob: 0}
"""


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("study") / "tiny.yaml"
    path.write_text(STUDY)
    return path


@pytest.mark.timeout(400)
def test_study_runs_in_pieces_skips_finished_runs_and_reports(study_file, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    study = load_study(study_file)
    assert [(s.entry, s.seed) for s in study.runs()] == [("ce", 0), ("ips-p0", 0), ("ce", 1), ("ips-p0", 1)]
    assert study.runs()[1].overrides["ips.prob"] == "0"
    logs: list[str] = []
    first = run_study(study, jobs=2, max_runs=2, log=logs.append)
    assert [(s.entry, s.seed) for s in first] == [("ce", 0), ("ips-p0", 0)]
    assert [s.state for s in study.runs()] == ["done", "done", "new", "new"]
    stamp = (study.out / "ce" / "s0" / "summary.json").stat().st_mtime_ns
    second = run_study(study, jobs=2, log=logs.append)
    assert [(s.entry, s.seed) for s in second] == [("ce", 1), ("ips-p0", 1)]
    assert (study.out / "ce" / "s0" / "summary.json").stat().st_mtime_ns == stamp, "finished runs are skipped"
    assert run_study(study, log=logs.append) == []

    rows = collect(study)
    assert len(rows) == 4
    files = write_report(study, rows)
    with files["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert {(r["entry"], r["seed"]) for r in table} == {
        ("ce", "0"),
        ("ce", "1"),
        ("ips-p0", "0"),
        ("ips-p0", "1"),
    }
    accs = [
        json.loads((study.out / "ce" / f"s{s}" / "summary.json").read_text())["test"]["acc"] for s in (0, 1)
    ]
    mean, sd = 100 * statistics.mean(accs), 100 * statistics.stdev(accs)
    md = files["md"].read_text()
    assert f"{mean:.2f} +- {sd:.2f}" in md
    # pair methods push two images per anchor: the compute column shows it
    ce_seen = [r for r in rows if r["entry"] == "ce"][0]["images_seen"]
    ips_seen = [r for r in rows if r["entry"] == "ips-p0"][0]["images_seen"]
    assert ips_seen == 2 * ce_seen
    assert files["png"].stat().st_size > 1000


def test_a_partial_run_is_resumed_not_restarted(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    study = load_study(path)
    spec = study.runs()[0]
    (spec.run_dir / "checkpoints").mkdir(parents=True)
    (spec.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    from patchswap.engine.compare import _command

    assert spec.state == "partial"
    assert _command(study, spec)[-2:] == ["--resume", str(spec.run_dir)]


def test_a_study_can_be_run_entry_by_entry_in_a_chosen_order(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    study = load_study(path)
    part = restrict(study, ["ips-p0", "ce"], [1])
    assert [(s.entry, s.seed) for s in part.runs()] == [("ips-p0", 1), ("ce", 1)]
    assert [s.run_dir for s in part.runs()] == [study.runs()[3].run_dir, study.runs()[2].run_dir]
    assert restrict(study).runs() == study.runs()
    assert len(study.runs()) == 4, "the whole study (and its report) is untouched"
    with pytest.raises(ConfigError, match=r"no entries \['cs'\].*'ce', 'ips-p0'"):
        restrict(study, ["cs"])
    with pytest.raises(ConfigError, match=r"seeds \[7\] are not in"):
        restrict(study, None, [7])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("entries: {a: {optim.lrr: 0.1}}", "did you mean"),
        ("entries: {a: {method: nope}}", "unknown method"),
        ("seeds: [a]\nentries: {a: {method: ce}}", "seeds must be a list of integers"),
        ("entries: {}", "entries must map"),
        ("entry: {a: {method: ce}}", "unknown study keys"),
    ],
)
def test_a_bad_study_fails_before_anything_trains(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_study(path)


def test_a_transfer_study_takes_each_seeds_backbone_and_ranks_on_miou(tmp_path):
    from patchswap.engine.compare import _command

    path = tmp_path / "transfer.yaml"
    path.write_text(
        "command: transfer\nseeds: [0, 1]\nout: runs\n"
        "set: {task: segment, model.arch: fcn}\n"
        "entries:\n"
        "  from-ce: {model.backbone: 'backbones/ce/s{seed}'}\n"
        "  from-ips: {model.backbone: 'backbones/ips/s{seed}'}\n"
    )
    study = load_study(path)
    specs = {(s.entry, s.seed): s for s in study.runs()}
    assert specs[("from-ips", 1)].overrides["model.backbone"] == "backbones/ips/s1"
    cmd = _command(study, specs[("from-ce", 0)])
    assert cmd[2:4] == ["patchswap.cli", "transfer"]
    assert cmd[cmd.index("--model.backbone") + 1] == "backbones/ce/s0"
    assert cmd[cmd.index("--task") + 1] == "segment"
    # Finished runs are scored on mIoU: fake two summaries and check the ranking and the table.
    for (entry, seed), miou in {("from-ce", 0): 0.5, ("from-ips", 0): 0.6, ("from-ips", 1): 0.7}.items():
        run_dir = specs[(entry, seed)].run_dir
        run_dir.mkdir(parents=True)
        summary = {"selected_on": "val/miou", "val": {"miou": miou}, "test": {"miou": miou - 0.1}}
        (run_dir / "summary.json").write_text(json.dumps(summary))
    rows = collect(study)
    assert {(r["entry"], r["seed"], r["val_acc"]) for r in rows} == {
        ("from-ce", 0, 0.5),
        ("from-ips", 0, 0.6),
        ("from-ips", 1, 0.7),
    }
    md = write_report(study, rows)["md"].read_text()
    assert "val mIoU (%)" in md
    assert md.index("| from-ips | 2 | 65.00 +- 7.07") < md.index("| from-ce | 1 | 50.00 | 40.00 |")


def test_a_transfer_study_with_a_bad_key_fails_early(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("command: transfer\nentries: {a: {model.arch: unet}}\n")
    with pytest.raises(ConfigError, match="does not fit task"):
        load_study(path)
    path.write_text("command: fit\nentries: {a: {method: ce}}\n")
    with pytest.raises(ConfigError, match="command must be train or transfer"):
        load_study(path)


def test_the_report_adds_the_evaluation_suite_of_evaluated_runs(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("seeds: [0, 1]\nout: runs\nentries: {ce: {method: ce}, ips: {method: ips}}\n")
    study = load_study(path)
    for spec in study.runs():
        spec.run_dir.mkdir(parents=True)
        summary = {"val": {"acc": 0.5 + spec.seed / 10}, "test": {"acc": 0.5}}
        (spec.run_dir / "summary.json").write_text(json.dumps(summary))
        if spec.entry == "ips":  # only ips was evaluated with the suite
            fgsm = 0.3 + spec.seed / 10
            suite = {"images": 100, "calibration": {"acc": 0.5, "ece": 0.1}, "fgsm": {"0.01": fgsm}}
            (spec.run_dir / "eval.json").write_text(json.dumps(suite))
    md = write_report(study, collect(study))["md"].read_text()
    table = md.split("Evaluation suite", 1)[1]
    assert "100 images" in table and "| clean acc | ECE | FGSM 0.01 |" in table
    assert "| ips | 2 | 50.00 +- 0.00 | 10.00 +- 0.00 | 35.00 +- 7.07 |" in table
    assert "| ce |" not in table


def test_the_cli_runs_only_the_chosen_entries_and_seeds(tmp_path, monkeypatch, capsys):
    from patchswap import cli

    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    ran = []
    monkeypatch.setattr(
        "patchswap.engine.compare.run_study", lambda study, **kw: ran.extend(study.runs()) or []
    )
    assert cli.main(["compare", str(path), "--entries", "ips-p0", "--seeds", "0"]) == 0
    assert [(s.entry, s.seed) for s in ran] == [("ips-p0", 0)]
    assert cli.main(["compare", str(path), "--entries", "kd"]) == 2
    assert "no entries ['kd']" in capsys.readouterr().err


class _FakeTrainer:
    """Stands in for a training process: it finishes at once, writing the run's summary."""

    pid = 2**22 + 12345  # beyond any pid_max: never a live process

    def __init__(self, cmd, **kwargs):
        run_dir = Path(cmd[cmd.index("--trainer.run_dir") + 1])
        (run_dir / "summary.json").write_text(json.dumps({"val": {"acc": 0.5}, "test": {"acc": 0.5}}))
        self.returncode = 0

    def poll(self):
        return 0


def test_a_run_trained_by_another_process_is_skipped_and_a_stale_lock_taken_over(tmp_path, monkeypatch):
    import os
    import socket

    from patchswap.engine import compare

    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    study = load_study(path)
    busy, stale, free, _ = study.runs()
    host = socket.gethostname()
    for spec, pid in ((busy, os.getpid()), (stale, _FakeTrainer.pid)):
        spec.run_dir.mkdir(parents=True)
        (spec.run_dir / compare.LOCK_NAME).write_text(f"{pid} {host}\n")
    monkeypatch.setattr(compare.subprocess, "Popen", _FakeTrainer)
    logs: list[str] = []
    run_study(study, max_runs=3, log=logs.append)
    assert [s.state for s in study.runs()] == ["new", "done", "done", "new"]
    assert any(f"skip ce seed 0: being trained by process {os.getpid()}" in line for line in logs)
    assert not (stale.run_dir / compare.LOCK_NAME).exists(), "a finished run releases its lock"
    assert (busy.run_dir / compare.LOCK_NAME).exists(), "another process's lock is left alone"
    assert compare.claim_run(free.run_dir) is None  # free again: claimed by this process
    assert compare.claim_run(free.run_dir) == f"process {os.getpid()}"
    (busy.run_dir / compare.LOCK_NAME).write_text("77 some-other-host\n")
    assert "on some-other-host" in compare.claim_run(busy.run_dir)


def test_the_report_pairs_each_entry_with_the_reference_seed_by_seed(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("seeds: [0, 1, 2, 3]\nreference: ce\nentries: {ce: {method: ce}, ips: {method: ips}}\n")
    study = load_study(path)
    assert study.reference == "ce"
    val = {("ce", 0): 0.60, ("ce", 1): 0.62, ("ce", 2): 0.64, ("ips", 0): 0.61, ("ips", 1): 0.64}
    val.update({("ips", 2): 0.65, ("ips", 3): 0.99})  # seed 3 has no ce run: it cannot be paired
    for (entry, seed), acc in val.items():
        run_dir = study.out / entry / f"s{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps({"val": {"acc": acc}, "test": {"acc": 0.5}}))
    md = write_report(study, collect(study))["md"].read_text()
    # diffs 1, 2, 1 points: mean 1.33, std 0.58, t(2) = 4.303 -> half-width 1.43
    assert "| ips | 3 | 1.33 +- 0.58 | [-0.10, +2.77] | 3/3 | 0.00 +- 0.00 | [+0.00, +0.00] | 0/3 |" in md
    path.write_text("reference: kd\nentries: {ce: {method: ce}}\n")
    with pytest.raises(ConfigError, match="reference 'kd' is not an entry"):
        load_study(path)


def test_the_cli_sets_the_reference(tmp_path, capsys):
    from patchswap import cli

    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    assert cli.main(["compare", str(path), "--report-only", "--reference", "ce"]) == 0
    assert "Paired with `ce`" in (tmp_path / "runs" / "results.md").read_text()
    with pytest.raises(SystemExit, match="not an entry"):
        cli.main(["compare", str(path), "--report-only", "--reference", "kd"])
