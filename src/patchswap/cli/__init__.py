"""``patchswap`` command line: train | eval | compare | transfer | show-pairs | calibrate | predict | export.

Every config key is a flag (``--section.key VALUE``, e.g. ``--optim.lr 0.1 --ips.prob 0.25``) whose
help shows its default; ``--config FILE`` loads YAML first and flags override it.
"""

from __future__ import annotations

import sys

from patchswap.cli.commands import COMMANDS
from patchswap.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
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
        print(f"patchswap {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)  # distinct statuses: patchswap.engine.errors
