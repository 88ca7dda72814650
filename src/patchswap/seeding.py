"""The one way a seed and the name of a random stream become a seed, a torch generator or a numpy RNG.

A run's randomness is never drawn from one long global stream: every consumer asks for its own
stream, named by the run's seed and a few integer keys (a purpose, an epoch, a step, a batch), so
a resumed run, a re-evaluation or another number of workers reproduces exactly the same numbers::

    derive_seed(seed, epoch, AUGMENT)            # -> int, an independent seed for that stream
    generator(seed, epoch, AUGMENT, device=dev)  # -> torch.Generator seeded with it
    numpy_rng(seed, epoch)                       # -> numpy Generator on the same kind of name

The recipe is numpy's ``SeedSequence([seed mod 2**64, *keys])``, which hashes the whole name, so
streams that differ in any key are independent. ``bits`` sets the width of the result: a 63-bit
seed for new streams (it fits a signed 64-bit integer wherever it goes), and the 32- and 31-bit
widths with which data splits and the evaluation suite were first recorded, kept so that their
splits, subsets and corruptions stay the ones already published.

One property of ``SeedSequence`` to keep in mind when naming a stream: a name shorter than four
words is padded with zeros, so ``(seed, k)`` and ``(seed, k, 0)`` are the same stream. Give each
purpose of a family a distinct non-zero code, or give every stream of a family the same number of
keys.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SPLIT_BITS", "derive_seed", "step_seed", "generator", "numpy_rng"]

_MASK64 = 0xFFFFFFFFFFFFFFFF


def _entropy(seed: int, keys: tuple[int, ...]) -> list[int]:
    # Negative seeds wrap modulo 2**64 (SeedSequence takes non-negative words only).
    return [int(seed) & _MASK64, *(int(k) for k in keys)]


# Data splits, label noise and the dense scenes were drawn from 32-bit seeds from the start; a wider
# seed would move images between train, val and test, so these streams keep this width.
SPLIT_BITS = 32


def derive_seed(seed: int, *keys: int, bits: int = 63) -> int:
    """An independent, reproducible ``bits``-bit seed for the random stream named by ``(seed, *keys)``.

    The result is the top ``bits`` bits of the first ``ceil(bits / 32)`` 32-bit words of
    ``SeedSequence([seed, *keys])`` (read little-endian), so ``bits=63`` is a 64-bit word shifted
    right by one and ``bits=32`` the first word as it is.
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be between 1 and 64, got {bits!r}")
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"stream keys must be non-negative integers, got {keys!r}")
    words = -(-bits // 32)
    state = np.random.SeedSequence(_entropy(seed, keys)).generate_state(words, dtype=np.uint32)
    value = 0
    for i, word in enumerate(state):
        value |= int(word) << (32 * i)
    return value >> (32 * words - bits)


def generator(seed: int, *keys: int, device: torch.device | str = "cpu", bits: int = 63) -> torch.Generator:
    """A torch generator on ``device`` seeded with :func:`derive_seed` of the same name."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys, bits=bits))


def numpy_rng(seed: int, *keys: int) -> np.random.Generator:
    """numpy's default generator fed the stream's name itself (``default_rng([seed, *keys])``).

    This is what ``np.random.default_rng([seed, epoch])`` gives for a non-negative seed, so batch
    orders drawn that way are reproduced exactly.
    """
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"stream keys must be non-negative integers, got {keys!r}")
    return np.random.default_rng(_entropy(seed, keys))


_MASK64 = 0xFFFFFFFFFFFFFFFF


def step_seed(base: int, step: int) -> int:
    """A 63-bit seed for step ``step`` of a stream whose per-epoch base is ``base`` (a derived seed).

    For what runs every training step, where :func:`derive_seed` (numpy's SeedSequence, tens of
    microseconds) would cost too much: the SplitMix64 finaliser of ``base + (step + 1) * golden gamma``,
    pure integer arithmetic, so the result is a pure function of ``(base, step)`` and distinct steps
    give independent-looking seeds. ``base`` comes from :func:`derive_seed`, so every stream still
    starts from the one recipe above.
    """
    z = (int(base) + (int(step) + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1  # 63 bits, as every training stream
