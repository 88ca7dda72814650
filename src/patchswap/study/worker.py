"""One run of a study, in a process of its own: the public entry point ``compare`` starts.

A study never spells command-line flags: it describes a run as a :class:`Job` (which engine command,
which config files, which ``section.key`` overrides, or which run directory to resume) and starts
``python -m patchswap.study.worker JOB_JSON``, which hands the job to the engine's Python API. A
process per run keeps runs independent (threads, memory, a crash) and lets a study be killed and
continued.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Job", "main", "run_job"]

COMMANDS = ("train", "transfer")


@dataclass
class Job:
    """What one study run does: ``command`` with ``configs`` and ``overrides``, or resume ``resume``."""

    command: str = "train"
    configs: list[str] = field(default_factory=list)
    overrides: dict[str, str] = field(default_factory=dict)
    resume: str | None = None  # a run directory to continue (its saved config; overrides still apply)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        job = cls(**json.loads(text))
        if job.command not in COMMANDS:
            raise ValueError(f"a study job runs one of {COMMANDS}, got {job.command!r}")
        return job


def run_job(job: Job) -> dict[str, Any]:
    """Run ``job`` through the engine in this process; returns the run's summary."""
    if job.command == "transfer":
        from patchswap.engine import load_transfer_config, resume_transfer, train_transfer

        if job.resume:
            return resume_transfer(job.resume, job.overrides)
        return train_transfer(load_transfer_config(job.configs, job.overrides))
    from patchswap.engine import load_config, resume, train

    if job.resume:
        return resume(job.resume, job.overrides)
    return train(load_config(job.configs, job.overrides))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m patchswap.study.worker JOB_JSON (patchswap compare starts it)", file=sys.stderr
        )
        return 2
    job = Job.from_json(args[0])
    try:
        summary = run_job(job)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # the engine's errors say what to change
        from patchswap.engine.errors import failure_line

        print(failure_line(job.command, e), file=sys.stderr)
        return getattr(e, "exit_code", 2)  # the statuses of patchswap.engine.errors (75: stopped)
    if summary:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
