"""Dense training methods (segmentation, detection): one file each, one registry. Lightning-free.

Importing this package registers them all. Add a method: a file with a :class:`DenseMethod`
subclass decorated with :func:`register_dense_method`, imported below.
"""

from patchswap.dense.methods import ce, ips  # noqa: F401  (registration)
from patchswap.dense.methods.base import (
    IGNORE_INDEX,
    DenseBatch,
    DenseMethod,
    available_dense_methods,
    create_dense_method,
    dense_method_class,
    register_dense_method,
)
from patchswap.dense.methods.ce import DenseCE
from patchswap.dense.methods.ips import DenseIPS

__all__ = [
    "IGNORE_INDEX",
    "DenseBatch",
    "DenseCE",
    "DenseIPS",
    "DenseMethod",
    "available_dense_methods",
    "create_dense_method",
    "dense_method_class",
    "register_dense_method",
]
