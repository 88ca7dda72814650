"""The built-in dataset families; importing this package registers them (see :mod:`..registry`).

* :mod:`.embedded` -- ``digits``: scikit-learn's bundled 8x8 digits; no network, no files (the default).
* :mod:`.torchvision_sets` -- ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``, ``svhn``, ``stl10``
  under ``data_dir``, loaded into memory as uint8 tensors.
* :mod:`.npz` -- ``npz:PATH[,PATH...]`` (or a bare ``*.npz`` path): arrays ``x``/``y``/``classes``.
* :mod:`.folders` -- ``folder:PATH`` (or a bare directory): ``PATH/train/<class>/*`` images, decoded
  per item.

A loader returns a :class:`~.base.MemorySource` or :class:`~.folders.FolderSource`; both expose
``labels()``, their own ``test``/``val`` (or None) and ``bundle(splits)``, so ``build_data`` treats
them alike.
"""

from __future__ import annotations

from typing import Any

from ..bundle import DataBundle
from ..registry import DatasetNotFoundError, available_datasets

# Registration order is listing order: digits and the torchvision names, then npz:, then folder:.
from . import embedded, npz, torchvision_sets  # noqa: F401

# isort: split
from . import folders  # noqa: F401
from .base import MemorySource
from .folders import FolderSource

__all__ = ["DataBundle", "DatasetNotFoundError", "FolderSource", "MemorySource", "available_datasets"]


def __getattr__(name: str) -> Any:
    """``build_data`` is still importable from here (it lives in :mod:`patchswap.data.build`)."""
    if name == "build_data":
        from ..build import build_data

        return build_data
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
