"""``patchswap`` command line: train | eval | compare | transfer | show-pairs | calibrate | predict | export.

Every config key is a flag (``--section.key VALUE``, e.g. ``--optim.lr 0.1 --ips.prob 0.25``) whose
help shows its default; ``--config FILE`` loads YAML first and flags override it.
"""

from __future__ import annotations

import sys
import warnings

from patchswap.cli.commands import COMMANDS
from patchswap.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def _warning_line(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """One line per warning. A ``UserWarning`` speaks to the user (a skipped file, a pretrained head
    re-initialised) and needs no source line; any other kind (deprecation, numerics) keeps its
    category and where it comes from, the place a bug report needs."""
    if issubclass(category, UserWarning):
        return f"warning: {message}\n"
    return f"{category.__name__} ({filename}:{lineno}): {message}\n"


def main(argv: list[str] | None = None) -> int:
    shown = warnings.formatwarning
    warnings.formatwarning = _warning_line  # for this command only: main() may run inside a notebook
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = shown


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from patchswap.data import DatasetNotFoundError
    from patchswap.engine.config import ConfigError
    from patchswap.engine.errors import failure_line
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
        print(failure_line(args.command, e), file=sys.stderr)
        return getattr(e, "exit_code", 2)  # distinct statuses: patchswap.engine.errors
