"""``python -m patchswap.cli``: the same as the ``patchswap`` command."""

import sys

from patchswap.cli import main

sys.exit(main())
