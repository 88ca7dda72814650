"""Training methods: one file each, one registry. Importing this package registers them all."""

from patchswap.methods import (  # noqa: F401  (registration)
    ce,
    cskd,
    cutmix,
    cutout,
    dlb,
    ips,
    kd,
    label_smoothing,
    mixup,
    pskd,
    tfkd,
)
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
