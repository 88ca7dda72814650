"""The images of an evaluation split: in-memory tensors and any dataset give the same chunks."""

from __future__ import annotations

import pytest
import torch

from patchswap.evaluation.images import ImageSource

pytestmark = pytest.mark.usefixtures("single_thread")


def test_image_source_reads_any_dataset_through_a_loader(tiny_eval):
    """Image folders are no tensors: the source batches them through a DataLoader, same images."""

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(tiny_eval.labels)

        def __getitem__(self, i):
            return tiny_eval.images[i], int(tiny_eval.labels[i])

    loader = ImageSource(Items(), max_images=50, seed=3)
    direct = ImageSource.from_tensors(tiny_eval.images, tiny_eval.labels, max_images=50, seed=3)
    assert loader.image_size == direct.image_size == (8, 8)
    a = list(loader.batches(16))
    b = list(direct.batches(16))
    assert [len(y) for _, y in a] == [16, 16, 16, 2]
    assert torch.equal(torch.cat([x for x, _ in a]), torch.cat([x for x, _ in b]))
    assert torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in b]))
