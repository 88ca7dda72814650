"""Studies: methods x seeds in processes of their own, run locks, and the tables (``patchswap compare``)."""
