"""``patchswap`` command line: train | eval | compare | transfer | show-pairs | calibrate | predict | export.

Every config key is a flag (``--section.key VALUE``, e.g. ``--optim.lr 0.1 --ips.prob 0.25``) whose
help shows its default; ``--config FILE`` loads YAML first and flags override it.
"""

from __future__ import annotations

import os
import sys
import warnings

from patchswap.cli.commands import COMMANDS
from patchswap.cli.parser import build_parser

__all__ = ["build_parser", "main"]


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _warning_line(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """One line per warning: patchswap's own say what to do and need no source line; others keep
    where they come from, the place a bug report needs."""
    if os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep):
        return f"patchswap: warning: {message}\n"
    return f"{category.__name__} ({filename}:{lineno}): {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _warning_line
    parser = build_parser()
    args = parser.parse_args(argv)
    from patchswap.data import DatasetNotFoundError
    from patchswap.engine.config import ConfigError
    from patchswap.engine.harness import RunError
    from patchswap.runs import CheckpointError

    try:
        return COMMANDS[args.command](args)
    except (
        ConfigError,
        RunError,
        CheckpointError,
        DatasetNotFoundError,
        ValueError,
        FileNotFoundError,
        RuntimeError,
    ) as e:
        # A stop asked by a signal wrote its checkpoint and says how to resume: not an error.
        kind = "" if type(e).__name__ == "TrainingStopped" else "error: "
        print(f"patchswap {args.command}: {kind}{e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)  # distinct statuses: patchswap.engine.errors
