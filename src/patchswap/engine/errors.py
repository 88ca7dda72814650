"""Why a run stops early, and the exit status each reason gives the command line.

| status | meaning |
|---|---|
| 2 | the run cannot start as asked (a config error, an existing run, nothing to resume, ...) |
| 65 | the loss became NaN or infinite (``trainer.on_nonfinite stop``); the last finite checkpoint is kept |
| 74 | a checkpoint could not be written (disk full, permissions); the previous one is intact |
| 75 | stopped by SIGTERM, SIGINT or SIGUSR1 after writing a checkpoint: resume it (the message says how) |
| 130 | a second Ctrl-C: stopped at once, without a checkpoint of the current step |

75 is ``EX_TEMPFAIL`` of ``sysexits.h`` ("try again later"), 74 ``EX_IOERR`` and 65 ``EX_DATAERR``:
a job script can tell "preempted, requeue me" from "failed" without reading the log.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CHECKPOINT_FAILED",
    "EXIT_DIVERGED",
    "EXIT_HARD_INTERRUPT",
    "EXIT_STOPPED",
    "CheckpointWriteError",
    "RunError",
    "TrainingDiverged",
    "TrainingStopped",
    "failure_line",
]

EXIT_DIVERGED = 65
EXIT_CHECKPOINT_FAILED = 74
EXIT_STOPPED = 75
EXIT_HARD_INTERRUPT = 130


class RunError(RuntimeError):
    """A run cannot start or continue as asked (existing run dir, nothing to resume, ...)."""

    exit_code = 2


class TrainingStopped(RunError):
    """A signal asked the run to stop; a checkpoint of the step it stopped at was written."""

    exit_code = EXIT_STOPPED


class TrainingDiverged(RunError):
    """The training loss became NaN or infinite."""

    exit_code = EXIT_DIVERGED


class CheckpointWriteError(RunError):
    """A checkpoint could not be written; the previous one is left as it was."""

    exit_code = EXIT_CHECKPOINT_FAILED


def failure_line(command: str, error: BaseException) -> str:
    """How a command reports an engine error on stderr. A stop by a signal is no error: it wrote its
    checkpoint, and its message says how to resume."""
    kind = "" if isinstance(error, TrainingStopped) else "error: "
    return f"patchswap {command}: {kind}{error}"
