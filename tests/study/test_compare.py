"""patchswap compare: a study runs in resumable pieces, skips finished runs and tabulates honestly."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from patchswap.engine.config import ConfigError
from patchswap.study.compare import load_study, restrict, run_study
from patchswap.study.locks import LOCK_NAME, claim_run
from patchswap.study.report import collect, write_report

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
    # ips pairs inside ce-sized batches by default (23-25 digits per class: 59 groups of 4, 8 classes per
    # batch, so 7 batches, as ce's 240 // 32): the compute column shows ce's images
    ce_seen = [r for r in rows if r["entry"] == "ce"][0]["images_seen"]
    ips_seen = [r for r in rows if r["entry"] == "ips-p0"][0]["images_seen"]
    assert ips_seen == ce_seen == 7 * 32
    assert files["png"].stat().st_size > 1000


def test_a_partial_run_is_resumed_not_restarted(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    study = load_study(path)
    spec = study.runs()[0]
    (spec.run_dir / "checkpoints").mkdir(parents=True)
    (spec.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    from patchswap.study.compare import job

    assert spec.state == "partial"
    resumed = job(study, spec)
    assert (resumed.command, resumed.resume, resumed.configs) == ("train", str(spec.run_dir), [])


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


def test_a_transfer_study_with_a_bad_key_fails_early(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("command: transfer\nentries: {a: {model.arch: unet}}\n")
    with pytest.raises(ConfigError, match="does not fit task"):
        load_study(path)
    path.write_text("command: fit\nentries: {a: {method: ce}}\n")
    with pytest.raises(ConfigError, match="command must be train or transfer"):
        load_study(path)


def test_the_cli_runs_only_the_chosen_entries_and_seeds(tmp_path, monkeypatch, capsys):
    from patchswap import cli

    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    ran = []
    monkeypatch.setattr(
        "patchswap.study.compare.run_study", lambda study, **kw: ran.extend(study.runs()) or []
    )
    assert cli.main(["compare", str(path), "--entries", "ips-p0", "--seeds", "0"]) == 0
    assert [(s.entry, s.seed) for s in ran] == [("ips-p0", 0)]
    assert cli.main(["compare", str(path), "--entries", "kd"]) == 2
    assert "no entries ['kd']" in capsys.readouterr().err


class _FakeTrainer:
    """Stands in for a training process: it finishes at once, writing the run's summary."""

    pid = 2**22 + 12345  # beyond any pid_max: never a live process

    def __init__(self, cmd, **kwargs):
        from patchswap.study.worker import Job

        assert cmd[1:3] == ["-m", "patchswap.study.worker"]
        run_dir = Path(Job.from_json(cmd[3]).overrides["trainer.run_dir"])
        (run_dir / "summary.json").write_text(json.dumps({"val": {"acc": 0.5}, "test": {"acc": 0.5}}))
        self.returncode = 0

    def poll(self):
        return 0


class _StoppedTrainer(_FakeTrainer):
    """A training process stopped by a signal: exit 75 after its checkpoint, no summary."""

    def __init__(self, cmd, **kwargs):
        self.returncode = 75

    def poll(self):
        return 75


def test_a_stopped_run_is_logged_as_stopped_and_left_to_resume(tmp_path, monkeypatch):
    from patchswap.study import compare

    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    study = restrict(load_study(path), ["ce"])
    monkeypatch.setattr(compare.subprocess, "Popen", _StoppedTrainer)
    logs: list[str] = []
    with pytest.raises(RuntimeError, match="rerun the same compare to resume the stopped ones"):
        run_study(study, max_runs=1, log=logs.append)
    assert any("stopped ce seed 0 at a checkpoint: the same compare resumes it" in line for line in logs)
    assert not any("FAILED" in line for line in logs)


def test_a_run_trained_by_another_process_is_skipped_and_a_stale_lock_taken_over(tmp_path, monkeypatch):
    import os
    import socket

    from patchswap.study import compare

    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    study = load_study(path)
    busy, stale, free, _ = study.runs()
    host = socket.gethostname()
    for spec, pid in ((busy, os.getpid()), (stale, _FakeTrainer.pid)):
        spec.run_dir.mkdir(parents=True)
        (spec.run_dir / LOCK_NAME).write_text(f"{pid} {host}\n")
    monkeypatch.setattr(compare.subprocess, "Popen", _FakeTrainer)
    logs: list[str] = []
    run_study(study, max_runs=3, log=logs.append)
    assert [s.state for s in study.runs()] == ["new", "done", "done", "new"]
    assert any(f"skip ce seed 0: being trained by process {os.getpid()}" in line for line in logs)
    assert not (stale.run_dir / LOCK_NAME).exists(), "a finished run releases its lock"
    assert (busy.run_dir / LOCK_NAME).exists(), "another process's lock is left alone"
    assert claim_run(free.run_dir) is None  # free again: claimed by this process
    assert claim_run(free.run_dir) == f"process {os.getpid()}"


def test_the_cli_sets_the_reference(tmp_path, capsys):
    from patchswap import cli

    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    assert cli.main(["compare", str(path), "--report-only", "--reference", "ce"]) == 0
    assert "Paired with `ce`" in (tmp_path / "runs" / "results.md").read_text()
    capsys.readouterr()
    assert cli.main(["compare", str(path), "--report-only", "--reference", "kd"]) == 2
    assert "reference 'kd' is not an entry" in capsys.readouterr().err
    path.write_text(STUDY + "reference: kd\n")
    with pytest.raises(ConfigError, match="reference 'kd' is not an entry"):
        load_study(path)


def test_status_line_names_running_runs_their_epoch_and_the_time_left(tmp_path):
    """Issue 18: compare says which run trains, its epoch, runs done / total and the time left."""
    from patchswap.study.compare import RunSpec, epochs_done, status_line

    def spec(entry, seed, rows):
        run_dir = tmp_path / entry / f"s{seed}"
        run_dir.mkdir(parents=True)
        if rows is not None:
            lines = ["epoch,train/loss"] + [f"{i},1.0" for i in range(rows)]
            (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
        return RunSpec(entry, seed, run_dir, {})

    ips, ce = spec("ips", 1, 4), spec("ce", 0, None)
    assert (epochs_done(ips.run_dir), epochs_done(ce.run_dir)) == (4, 0)
    # ips: 4 epochs in 240 s, 6 to go at 60 s each = 6 min; 2 queued runs at 10 min (ips's pace); 2 jobs
    line = status_line(
        [(ips, 0.0, 10, 0), (ce, 200.0, 10, 0)], done=3, total=8, queued=2, run_seconds=[], jobs=2, now=240.0
    )
    assert line.startswith("[3/8 runs done] training: ips seed 1 epoch 5/10, ce seed 0 epoch 1/10")
    assert line.endswith("about 13 min left")  # (6 + 2 * 10) / 2 jobs
    # finished runs set the queued runs' time; a resumed run's pace counts only the epochs it trained now
    line = status_line([(ips, 0.0, 10, 3)], done=0, total=2, queued=1, run_seconds=[600.0], jobs=1, now=60.0)
    assert line.endswith("about 16 min left")  # (6 min at 60 s + 10 min) / 1 job
    assert "after the first epoch" in status_line(
        [(ce, 0.0, 10, 0)], done=0, total=1, queued=0, run_seconds=[], jobs=1, now=5.0
    )


@pytest.mark.timeout(400)
def test_run_study_logs_status_lines_while_runs_train(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tmp_path / "s.yaml"
    path.write_text(STUDY.replace("seeds: [0, 1]", "seeds: [0]"))
    study = restrict(load_study(path), ["ce"])
    logs: list[str] = []
    run_study(study, log=logs.append, status_every=0.5)
    status = [line for line in logs if "runs done] training: ce seed 0 epoch" in line]
    assert status and status[0].strip().startswith("[0/1 runs done]")
    assert any("(1/1 runs done)" in line for line in logs)
