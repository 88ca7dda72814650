""":func:`build_data`, the one entry point the engine and CLI use: name -> loaded source -> splits.

The name is looked up in the registry (:mod:`patchswap.data.registry`), the loader returns a source,
:func:`~patchswap.data.carve.carve_splits` carves it the same way whatever the storage, and the source
builds the :class:`~patchswap.data.bundle.DataBundle`. Label noise is applied last.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..seeding import SPLIT_BITS, derive_seed
from . import sources  # noqa: F401  (registers the built-in datasets)
from .bundle import DataBundle
from .carve import carve_splits
from .noise import LabelNoise, apply_label_noise
from .registry import DatasetRequest, resolve_dataset

__all__ = ["build_data", "build_data_from_section"]

# Seed-derivation stages of the label-noise streams (1-3 are the carve stages in .carve).
_STAGE_NOISE_TRAIN, _STAGE_NOISE_VAL = 4, 5


def _check_train_subset(train_subset: Any) -> int | None:
    if train_subset is None:
        return None
    if isinstance(train_subset, bool) or not isinstance(train_subset, (int, np.integer)) or train_subset <= 0:
        raise ValueError(f"train_subset must be a positive integer number of images, got {train_subset!r}")
    return int(train_subset)


def build_data(
    name: str,
    *,
    data_dir: str | None = None,
    download: bool = False,
    val_split: float | int = 0.1,
    test_split: float | int | None = None,
    split_seed: int = 0,
    train_subset: int | None = None,
    image_size: int | None = None,
    label_noise: str | None = None,
    model_input: Sequence[Any] | None = None,
    on_bad_image: str = "skip",
) -> DataBundle:
    """Load dataset ``name`` and return its train/val/test splits with matching device transforms.

    Split order: (1) the test set -- the dataset's own, else ``test_split`` (count or fraction) carved
    off the training pool; ``digits`` has no official test split and carves 20% when ``test_split`` is
    None; (2) the validation set -- a given ``val/`` folder, else ``val_split`` of what is left
    (0 = no validation set); (3) ``train_subset`` images kept from the rest. Every carve is stratified and
    seeded from ``split_seed`` alone, so val/test never depend on the training seed or on
    ``train_subset``. ``image_size`` resizes in-memory datasets once at load time and sets the crop size
    of image folders (default 224). npz/digits normalization statistics come from the final training
    split only.

    ``label_noise`` (``"symmetric:R"`` or ``"asymmetric:R"``, see :mod:`patchswap.data.noise`) flips
    the labels of the final train and val splits, each with its own stream seeded from ``split_seed``;
    the test split keeps its clean labels, and ``clean_targets`` keeps the originals of the noisy ones.

    Image folders only: ``model_input`` is the pretrained model's ``(image_size, mean, std)``
    (:func:`patchswap.models.pretrained_input`), used where ``image_size`` is None; ``on_bad_image``
    (``skip`` | ``error``) says what happens to corrupt, truncated or non-image files.
    """
    entry, argument = resolve_dataset(name)
    subset_n = _check_train_subset(train_subset)
    noise = LabelNoise.parse(label_noise)
    request = DatasetRequest(
        name=entry.name,
        argument=argument,
        data_dir=data_dir,
        download=download,
        image_size=image_size,
        model_input=None if model_input is None else tuple(model_input),
        on_bad_image=on_bad_image,
    )
    source = entry.loader(request)
    splits = carve_splits(
        source.labels(),
        split_seed=split_seed,
        val_split=val_split,
        test_split=test_split,
        train_subset=subset_n,
        has_test=source.test is not None,
        has_val=source.val is not None,
        default_test_split=source.default_test_split,
        source=source.display,
    )
    return _with_label_noise(source.bundle(splits), noise, split_seed)


def _with_label_noise(bundle: DataBundle, noise: LabelNoise | None, split_seed: int) -> DataBundle:
    """Noisy train and val labels (the val split is carved from the same noisy source); test stays clean."""
    if noise is None:
        return bundle
    seeds = {
        "train": derive_seed(split_seed, _STAGE_NOISE_TRAIN, bits=SPLIT_BITS),
        "val": derive_seed(split_seed, _STAGE_NOISE_VAL, bits=SPLIT_BITS),
    }
    for split, seed in seeds.items():
        setattr(
            bundle, split, apply_label_noise(getattr(bundle, split), noise, classes=bundle.classes, seed=seed)
        )
    bundle.label_noise = str(noise)
    return bundle


def build_data_from_section(section: Any, *, model_input: Sequence[Any] | None = None) -> DataBundle:
    """:func:`build_data` from a run config's ``data`` section: the dataclass, or its saved mapping.

    The one place where a run's data keys become ``build_data`` arguments, so training, evaluation
    and deployment rebuild exactly the same splits. Keys ``build_data`` does not take (batch sizes,
    workers) are ignored; missing ones take ``build_data``'s defaults. ``model_input`` is the pretrained
    model's (size, mean, std) (:func:`patchswap.models.pretrained_input`), which the data cannot know.
    """
    values = dict(section) if isinstance(section, Mapping) else vars(section)
    params = inspect.signature(build_data).parameters
    kwargs = {k: values[k] for k in params if k not in ("name", "model_input") and k in values}
    return build_data(values.get("name", "digits"), model_input=model_input, **kwargs)
