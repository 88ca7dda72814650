"""The training streams of one seed: the same in one process as ever, one per rank under DDP."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import torch

from patchswap.engine.seeded import SeededTraining, seed_step, start_epoch_randomness
from patchswap.seeding import derive_seed, generator


def _module(world: int, rank: int, epoch: int = 3) -> L.LightningModule:
    module = SeededTraining()
    trainer = SimpleNamespace(world_size=world, global_rank=rank, current_epoch=epoch, datamodule=None)
    module._trainer = trainer
    return module


def _draws(g: torch.Generator) -> torch.Tensor:
    return torch.rand(8, generator=g)


def test_one_process_keeps_its_streams():
    """(seed, epoch, purpose) as before the ranks were keys: old runs resume into the same streams."""
    got = start_epoch_randomness(_module(1, 0), seed=5)
    assert torch.equal(_draws(got), _draws(generator(5, 3, 1)))
    seed_step(_module(1, 0), 5, batch_idx=0)
    a = torch.rand(4)
    seed_step(_module(1, 0), 5, batch_idx=0)
    assert torch.equal(a, torch.rand(4)), "a step's global RNG is a function of (seed, epoch, step)"


def test_each_rank_draws_its_own_augmentation_swaps_and_dropout():
    """Under DDP the ranks see different images: they must not also share crops, flips and swaps."""
    streams = [_draws(start_epoch_randomness(_module(2, r), seed=5)) for r in range(2)]
    assert not torch.equal(streams[0], streams[1])
    again = _draws(start_epoch_randomness(_module(2, 1), seed=5))
    assert torch.equal(again, streams[1]), "still a function of (seed, epoch, rank)"
    dropout = []
    for r in range(2):
        module = _module(2, r)
        seed_step(module, 5, batch_idx=7)
        dropout.append(torch.rand(4))
    assert not torch.equal(dropout[0], dropout[1])
    assert derive_seed(5, 3, 2, 0) != derive_seed(5, 3, 2, 1)
