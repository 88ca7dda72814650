"""Training methods: one file each, one registry. Importing this package registers them all."""

from patchswap.methods import ce, ips  # noqa: F401  (registration)
from patchswap.methods.base import (
    Method,
    MethodBatch,
    StepOutput,
    available_methods,
    create_method,
    method_class,
    register_method,
)

__all__ = [
    "Method",
    "MethodBatch",
    "StepOutput",
    "available_methods",
    "create_method",
    "method_class",
    "register_method",
]
