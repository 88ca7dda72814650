"""Datasets that ship inside an installed package: ``digits`` (scikit-learn's bundled 8x8 digits).

They need no network and no files, which makes ``digits`` the default and the dataset of every quick
test. It has no official test split, so 20% is carved as test unless ``test_split`` says otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from ..arrays import TensorImageDataset
from ..registry import DatasetRequest, register_dataset
from .base import MemorySource

__all__ = ["DIGITS_TEST_FRACTION"]

DIGITS_TEST_FRACTION = 0.2


@register_dataset("digits")
def load_digits(request: DatasetRequest) -> MemorySource:
    """1,797 grayscale 8x8 digits, pixels scaled from 0..16 to the 0..255 every other dataset uses."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = (
        np.rint(np.asarray(digits.images, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    )
    train = TensorImageDataset(
        torch.from_numpy(images).unsqueeze(1).contiguous(),
        torch.as_tensor(digits.target, dtype=torch.int64),
        [str(int(c)) for c in digits.target_names],
    )
    source = MemorySource(
        display="digits",
        train=train,
        classes=train.classes,
        crop_padding=1,
        flip=False,
        default_test_split=DIGITS_TEST_FRACTION,
    )
    return source.resized(request.image_size)
