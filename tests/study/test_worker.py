"""The study worker: a run described as a job, handed to the engine's Python API."""

from __future__ import annotations

import json

import pytest

from patchswap.study.worker import Job, main


def test_a_job_round_trips_through_json_and_refuses_unknown_commands():
    job = Job("transfer", configs=["a.yaml"], overrides={"task": "segment"})
    assert Job.from_json(job.to_json()) == job
    with pytest.raises(ValueError, match=r"one of \('train', 'transfer'\), got 'fit'"):
        Job.from_json(json.dumps({"command": "fit"}))


def test_the_worker_trains_through_the_engine_and_reports_errors_as_the_cli_does(tmp_path, capsys):
    run_dir = tmp_path / "run"
    overrides = {
        "method": "ce",
        "trainer.epochs": "1",
        "trainer.progress_bar": "false",
        "trainer.run_dir": str(run_dir),
        "data.train_subset": "200",
    }
    assert main([Job("train", overrides=overrides).to_json()]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["method"] == "ce"
    capsys.readouterr()
    assert main([Job("train", resume=str(tmp_path / "missing")).to_json()]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_a_stopped_run_exits_75_and_says_stopped_not_error(monkeypatch, capsys):
    from patchswap.engine.errors import EXIT_STOPPED, TrainingStopped
    from patchswap.study import worker

    said = "stopped by SIGTERM at step 3 after writing last.ckpt"

    def stop(job):
        raise TrainingStopped(said)

    monkeypatch.setattr(worker, "run_job", stop)
    assert main([Job("train", {}).to_json()]) == EXIT_STOPPED
    assert capsys.readouterr().err == f"patchswap train: {said}\n"
