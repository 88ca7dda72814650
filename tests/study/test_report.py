"""The study report: ranked on validation, suite columns, paired differences to a reference entry."""

from __future__ import annotations

import json

import pytest

from patchswap.engine.config import ConfigError
from patchswap.study.compare import load_study
from patchswap.study.report import collect, write_report


def test_a_transfer_study_takes_each_seeds_backbone_and_ranks_on_miou(tmp_path):
    from patchswap.study.compare import job

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
    first = job(study, specs[("from-ce", 0)])
    assert (first.command, first.resume) == ("transfer", None)
    assert first.overrides["model.backbone"] == "backbones/ce/s0"
    assert first.overrides["task"] == "segment"
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


def test_several_references_give_a_paired_table_each(tmp_path):
    """ce at equal compute and ce at equal epochs: issue 17 pairs IPS with both."""
    path = tmp_path / "s.yaml"
    entries = "entries: {ce: {method: ce}, ce-2x: {method: ce, trainer.epochs: 2}, ips: {method: ips}}\n"
    path.write_text("seeds: [0, 1]\nreference: [ce-2x, ce]\n" + entries)
    study = load_study(path)
    assert study.references == ("ce-2x", "ce") and study.reference == "ce-2x"
    val = {"ce": [0.60, 0.62], "ce-2x": [0.63, 0.63], "ips": [0.61, 0.64]}
    for entry, accs in val.items():
        for seed, acc in enumerate(accs):
            run_dir = study.out / entry / f"s{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "summary.json").write_text(json.dumps({"val": {"acc": acc}, "test": {"acc": 0.5}}))
    md = write_report(study, collect(study))["md"].read_text()
    first, second = md.split("Paired with `ce-2x`", 1)[1].split("Paired with `ce`", 1)
    assert "| ips | 2 | -0.50 +- 2.12 |" in first and "| ce | 2 | -2.00 +- 1.41 |" in first
    assert "| ips | 2 | 1.50 +- 0.71 |" in second and "| ce-2x | 2 | 2.00 +- 1.41 |" in second
    path.write_text("reference: [ce, kd]\n" + entries)
    with pytest.raises(ConfigError, match="reference 'kd' is not an entry"):
        load_study(path)
