"""patchswap.seeding: one recipe for every random stream, reproducing the streams recorded so far."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from patchswap.seeding import derive_seed, generator, numpy_rng

SRC = Path(__file__).resolve().parents[1] / "src" / "patchswap"


# The recipes as they were written before patchswap.seeding (engine/module.py, data/splits.py,
# evaluation/adversarial.py, evaluation/suite.py): the one function must give each of them.
def _training(seed, *stream):
    return int(
        np.random.SeedSequence([seed, *stream]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1
    )


def _split_or_attack(seed, *stream):
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *stream]).generate_state(1)[0])


def _suite(seed, *stream):
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *stream]).generate_state(1)[0] >> 1)


def test_golden_values_of_the_recorded_streams():
    # Training (seed, epoch, purpose[, step]): 63 bits.
    assert derive_seed(0, 0, 0) == 7896617691693857887
    assert derive_seed(0, 0, 1) == 4324601099084218337
    assert derive_seed(0, 0, 2, 0) == 5228546342681945855
    assert derive_seed(0, 3, 1) == 2122545592250308646
    assert derive_seed(42, 5, 2, 17) == 8806747839427420088
    # Data split stages (split_seed, stage): 32 bits.
    assert [derive_seed(0, stage, bits=32) for stage in range(3)] == [2968811710, 3964924996, 3141116543]
    assert derive_seed(42, 1, bits=32) == 3329053876
    # Evaluation suite (seed, 7) subset and (seed, corruption, chunk): 31 bits.
    assert derive_seed(0, 7, bits=31) == 684899372
    assert derive_seed(0, 3, 2, bits=31) == 1585170822
    assert derive_seed(123, 7, bits=31) == 869435818
    # PGD random starts (seed, batch, eps index): 32 bits.
    assert derive_seed(0, 1, 2, bits=32) == 3884055042
    assert derive_seed(5, 0, 1, bits=32) == 3598628658


@pytest.mark.parametrize("seed", [0, 1, 7, 1234, 2**31 - 1, 2**40 + 3])
def test_one_function_reproduces_every_former_recipe(seed):
    for keys in [(0,), (3,), (0, 0), (0, 1), (5, 2), (9, 2, 0), (9, 2, 31), (1, 2, 3, 4, 5)]:
        assert derive_seed(seed, *keys) == _training(seed, *keys)
        assert derive_seed(seed, *keys, bits=32) == _split_or_attack(seed, *keys)
        assert derive_seed(seed, *keys, bits=31) == _suite(seed, *keys)


def test_widths():
    for bits in (1, 31, 32, 33, 63, 64):
        values = [derive_seed(s, 1, 2, bits=bits) for s in range(50)]
        assert all(0 <= v < 2**bits for v in values)
        assert max(values) >= 2 ** (bits - 1) * 0.5  # uses its range, not a few low bits
    # A wider seed starts with the narrower one's bits: 64 bits are words 0 and 1, 32 bits word 0.
    assert derive_seed(3, 4, bits=64) & 0xFFFFFFFF == derive_seed(3, 4, bits=32)
    assert derive_seed(3, 4, bits=64) >> 1 == derive_seed(3, 4)
    with pytest.raises(ValueError, match="bits"):
        derive_seed(0, 1, bits=65)
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(0, -1)


def test_streams_are_distinct_per_purpose_epoch_step_and_seed():
    names = [(s, e, p) for s in range(3) for e in range(4) for p in (0, 1)]
    names += [(s, e, 2, b) for s in range(3) for e in range(4) for b in range(20)]
    seeds = [derive_seed(*n) for n in names]
    assert len(set(seeds)) == len(names)
    # A name is hashed as a whole: swapping two keys is another stream.
    assert derive_seed(0, 1, 2) != derive_seed(0, 2, 1)


def test_short_names_are_padded_with_zeros():
    """SeedSequence's documented padding (see the module docstring): (s, k) and (s, k, 0) coincide."""
    assert derive_seed(5, 3) == derive_seed(5, 3, 0) == derive_seed(5, 3, 0, 0)
    assert derive_seed(5, 3, 0, 0, 0) != derive_seed(5, 3)  # beyond the four-word pool they differ


def test_negative_seeds_wrap_modulo_2_64():
    assert derive_seed(-1, 2) == derive_seed(2**64 - 1, 2)


def test_generator_is_torch_seeded_with_the_derived_seed():
    g = generator(0, 0, 1)
    assert g.initial_seed() == 4324601099084218337 and g.device == torch.device("cpu")
    expected = torch.rand(4, generator=torch.Generator().manual_seed(4324601099084218337))
    assert torch.equal(torch.rand(4, generator=generator(0, 0, 1)), expected)
    assert generator(0, 7, bits=31).initial_seed() == 684899372


def test_numpy_rng_is_default_rng_on_the_name():
    for seed, epoch in [(0, 0), (3, 5), (2**35, 1)]:
        a = numpy_rng(seed, epoch).permutation(20)
        b = np.random.default_rng([seed, epoch]).permutation(20)
        assert np.array_equal(a, b)
    assert not np.array_equal(numpy_rng(0, 1).permutation(20), numpy_rng(0, 2).permutation(20))


def test_seed_derivation_has_one_implementation():
    users = sorted(p.name for p in SRC.rglob("*.py") if "SeedSequence(" in p.read_text())
    assert users == ["seeding.py"]


def test_step_seeds_are_a_pure_function_of_base_and_step_and_differ_per_step():
    from patchswap.seeding import step_seed

    base = derive_seed(0, 3, 2)
    seeds = [step_seed(base, k) for k in range(1000)]
    assert seeds == [step_seed(base, k) for k in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(base + 1, 0) != seeds[0]
    # golden value: SplitMix64's published first output for state 0 is 0xE220A8397B1DCDAF (kept: 63 bits)
    assert step_seed(0, 0) == 0xE220A8397B1DCDAF >> 1
