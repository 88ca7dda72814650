"""patchswap compare: a study runs in resumable pieces, skips finished runs and tabulates honestly."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from patchswap.engine.compare import collect, load_study, run_study, write_report
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
