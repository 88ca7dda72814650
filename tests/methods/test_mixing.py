"""Cutout, MixUp and CutMix (as methods, as helpers, and inside IPS) against hand computations."""

from __future__ import annotations

import pytest
import scipy.stats as st
import torch
import torch.nn.functional as F
from helpers import RecordingLinear

from patchswap.methods import MethodBatch, create_method
from patchswap.methods.mixing import cutmix, cutout_mask, mix_targets, mixup, sample_beta, sample_gamma

N, C, H, W, CLASSES = 8, 3, 8, 8, 5


def Recorder() -> RecordingLinear:  # noqa: N802 - reads like the class it builds
    """A linear classifier of this module's sizes that keeps a copy of every input it sees."""
    return RecordingLinear(C * H * W, CLASSES)


def _batch(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Strictly positive, almost surely distinct pixels (a zero can only come from Cutout)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, C, H, W, generator=g) + 0.5, torch.randint(0, CLASSES, (n,), generator=g)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    return F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        log_target=True,
        reduction="batchmean",
    )


def _mixup_partners(seen: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor:
    """For each row, the row j with ``seen = lam * x + (1 - lam) * x[j]`` (asserted to exist)."""
    cand = lam * x[:, None] + (1 - lam) * x[None, :]  # [i, j, ...]
    err = (cand - seen[:, None]).abs().flatten(2).amax(dim=2)
    best = err.argmin(dim=1)
    assert (err.gather(1, best[:, None]) < 1e-5).all()
    return best


def _cutmix_box_and_partners(seen: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pasted box (union of changed pixels) and, for each row, the row its box came from."""
    box = (seen != x).any(dim=1).any(dim=0)
    cand = torch.where(box, x[None, :], x[:, None])  # [i, j, C, H, W]: row i with j's box
    exact = (cand == seen[:, None]).flatten(2).all(dim=2)
    assert exact.any(dim=1).all(), "every image must be itself with one partner's box pasted in"
    return box, exact.float().argmax(dim=1)


# -- Beta draws ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b"), [(1.0, 1.0), (2.0, 5.0), (0.5, 3.0)])
def test_sample_beta_follows_the_beta_law(a, b):
    s = sample_beta(a, b, (20000,), generator=_gen(0)).double().numpy()
    assert st.kstest(s, st.beta(a, b).cdf).pvalue > 1e-3
    assert abs(s.mean() - a / (a + b)) < 0.01


@pytest.mark.parametrize("a", [0.2, 1.0, 3.5])
def test_sample_gamma_follows_the_gamma_law_below_and_above_one(a):
    s = sample_gamma(a, (20000,), generator=_gen(1)).double().exp().numpy()
    assert st.kstest(s, st.gamma(a).cdf).pvalue > 1e-3


def test_beta_draws_follow_the_generator_not_the_global_rng():
    torch.manual_seed(123)
    first = sample_beta(1.0, 1.0, (5,), generator=_gen(7))
    torch.manual_seed(456)
    assert torch.equal(first, sample_beta(1.0, 1.0, (5,), generator=_gen(7)))
    assert not torch.equal(first, sample_beta(1.0, 1.0, (5,), generator=_gen(8)))
    with pytest.raises(ValueError, match="positive"):
        sample_gamma(0.0)


def test_mix_targets_are_probabilities_of_the_two_labels():
    y = torch.tensor([0, 1, 2, 2])
    perm = torch.tensor([1, 0, 3, 2])
    t = mix_targets(y, perm, torch.tensor(0.3), 4)
    torch.testing.assert_close(t.sum(dim=1), torch.ones(4))
    expected = torch.tensor([[0.3, 0.7, 0, 0], [0.7, 0.3, 0, 0], [0, 0, 1.0, 0], [0, 0, 1.0, 0]])
    torch.testing.assert_close(t, expected)


# -- cutout ----------------------------------------------------------------------------------------
def test_cutout_mask_matches_a_per_image_reference_loop():
    n, size = 64, 4
    mask = cutout_mask(n, H, W, size, generator=_gen(3))
    g = _gen(3)  # the same draws, in the documented order: centre rows, then centre columns
    cy, cx = torch.randint(0, H, (n,), generator=g), torch.randint(0, W, (n,), generator=g)
    for i in range(n):
        ref = torch.zeros(H, W, dtype=torch.bool)
        y0, x0 = int(cy[i]) - size // 2, int(cx[i]) - size // 2
        ref[max(0, y0) : max(0, y0 + size), max(0, x0) : max(0, x0 + size)] = True
        assert torch.equal(mask[i], ref), i
    full = mask.flatten(1).sum(dim=1)
    assert full.max() == size * size and full.min() >= (size // 2) ** 2  # clipped at the border


@pytest.mark.parametrize(("options", "side"), [({"size": 4}, 4), ({"size": 2, "size_fraction": 0.75}, 6)])
def test_cutout_zeroes_one_square_per_image_and_loss_is_ce(options, side):
    x, y = _batch(32)
    model = Recorder()
    out = create_method("cutout", **options)(model, MethodBatch(x.clone(), y, generator=_gen(0)))
    (seen,) = model.seen
    hole = seen == 0
    assert torch.equal(hole, hole[:, :1].expand_as(hole)), "the hole spans all channels"
    hole = hole[:, 0]
    assert torch.equal(torch.where(hole[:, None], 0.0, x), seen), "pixels outside the hole are untouched"
    rows, cols = hole.any(dim=2), hole.any(dim=1)
    assert torch.equal(hole, rows[:, :, None] & cols[:, None, :]), "each hole is one axis-aligned box"
    assert rows.sum(dim=1).max() == side and cols.sum(dim=1).max() == side and rows.any(dim=1).all()
    torch.testing.assert_close(out.loss, F.cross_entropy(model.fc(seen.flatten(1)), y))
    assert torch.equal(out.targets, y)


def test_cutout_follows_the_generator():
    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        model = Recorder()
        x, y = _batch()
        out = create_method("cutout", size=4)(model, MethodBatch(x, y, generator=_gen(seed)))
        return out.loss.detach(), model.seen[0]

    (l1, s1), (l2, s2), (_, s3) = run(5), run(5), run(6)
    assert torch.equal(l1, l2) and torch.equal(s1, s2) and not torch.equal(s1, s3)


# -- mixup -----------------------------------------------------------------------------------------
def test_mixup_mixes_images_and_labels_with_one_lambda_and_a_permutation():
    x, y = _batch()
    model = Recorder()
    out = create_method("mixup", alpha=1.0)(model, MethodBatch(x.clone(), y, generator=_gen(3)))
    lam = out.parts["lam"].item()
    assert 0.05 < lam < 0.95, "this seed gives a lambda that identifies the partners"
    (seen,) = model.seen
    perm = _mixup_partners(seen, x, lam)
    assert sorted(perm.tolist()) == list(range(N)), "partners form a permutation"
    z = model.fc(seen.flatten(1))
    expected = lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[perm])
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    dominant = torch.where(y == y[perm], y, y if lam > 0.5 else y[perm])
    assert torch.equal(out.targets, dominant)


def test_mixup_lambda_is_beta_distributed_per_batch():
    lams = torch.stack([mixup(torch.ones(2, 1, 2, 2), 0.4, generator=_gen(s)).lam for s in range(400)])
    assert st.kstest(lams.double().numpy(), st.beta(0.4, 0.4).cdf).pvalue > 1e-3


def test_mixup_and_cutmix_follow_the_generator():
    for name in ("mixup", "cutmix"):
        losses = []
        for seed in (3, 3, 4):
            x, y = _batch()
            losses.append(create_method(name)(Recorder(), MethodBatch(x, y, generator=_gen(seed))).loss)
        assert torch.equal(losses[0], losses[1]) and not torch.equal(losses[0], losses[2]), name


# -- cutmix ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_pastes_one_box_and_lambda_is_its_true_area(seed):
    x, y = _batch()
    model = Recorder()
    out = create_method("cutmix", alpha=1.0)(model, MethodBatch(x.clone(), y, generator=_gen(seed)))
    (seen,) = model.seen
    box, perm = _cutmix_box_and_partners(seen, x)
    assert box.any(), "this seed pastes a non-empty box"
    rows, cols = box.any(dim=1), box.any(dim=0)
    assert torch.equal(box, rows[:, None] & cols[None, :]), "one axis-aligned box for the whole batch"
    lam = out.parts["lam"].item()
    assert lam == pytest.approx(1 - box.sum().item() / (H * W), abs=1e-6)
    z = model.fc(seen.flatten(1))
    expected = lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[perm])
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    target = mix_targets(y, perm, out.parts["lam"], CLASSES)
    torch.testing.assert_close(target.sum(dim=1), torch.ones(N))
    assert torch.equal(out.targets, target.argmax(dim=1))


def test_cutmix_with_prob_zero_is_plain_ce_and_prob_half_mixes_some_batches():
    x, y = _batch()
    model = Recorder()
    out = create_method("cutmix", prob=0.0)(model, MethodBatch(x.clone(), y, generator=_gen(0)))
    assert torch.equal(model.seen[0], x) and out.parts["lam"].item() == 1.0
    torch.testing.assert_close(out.loss, F.cross_entropy(model.fc(x.flatten(1)), y))
    mixed = [cutmix(x, 1.0, prob=0.5, generator=_gen(s)).lam.item() < 1 for s in range(200)]
    assert 60 < sum(mixed) < 140


def test_bad_mixing_options_are_rejected():
    with pytest.raises(ValueError, match="alpha"):
        create_method("mixup", alpha=0.0)
    with pytest.raises(ValueError, match="prob"):
        create_method("cutmix", prob=1.5)
    with pytest.raises(ValueError, match="size"):
        create_method("cutout", size=0)
    with pytest.raises(ValueError, match="size_fraction"):
        create_method("cutout", size_fraction=1.5)
    with pytest.raises(ValueError, match="mix"):
        create_method("ips", mix="cutmixup")


# -- IPS + mixing ----------------------------------------------------------------------------------
def _ips_expected(z: torch.Tensor, target: torch.Tensor, t: float = 4.0) -> torch.Tensor:
    n = z.shape[0] // 2
    za, zb = z[:n], z[n:]
    ce = (_soft_ce(za, target) + _soft_ce(zb, target)) / 2
    kd = (_kl(zb, za, t) + _kl(za, zb, t)) / 2 * t * t
    return ce + kd


def test_ips_with_mixup_mixes_both_views_with_the_same_partner_pair_and_soft_targets():
    x, y = _batch()
    y = torch.cat([y[: N // 2], y[: N // 2]])  # [anchors..., partners...] of the same classes
    n = N // 2
    model = Recorder()
    method = create_method("ips", prob=0.0, mix="mixup", num_classes=CLASSES)
    out = method(model, MethodBatch(x.clone(), y, generator=_gen(2)))
    lam = out.parts["mix_lam"].item()
    assert 0.05 < lam < 0.95
    (seen,) = model.seen
    perm_a = _mixup_partners(seen[:n], x[:n], lam)
    perm_b = _mixup_partners(seen[n:], x[n:], lam)
    assert torch.equal(perm_a, perm_b), "pair i's two views mix with the two views of one pair"
    target = lam * F.one_hot(y[:n], CLASSES) + (1 - lam) * F.one_hot(y[:n][perm_a], CLASSES)
    z = model.fc(seen.flatten(1))
    torch.testing.assert_close(out.loss, _ips_expected(z, target.float()), rtol=1e-5, atol=1e-6)
    assert torch.equal(out.targets, torch.cat([target.argmax(1), target.argmax(1)]))


def test_ips_with_cutmix_pastes_the_same_box_into_both_views_from_the_same_pair():
    x, y = _batch()
    y = torch.cat([y[: N // 2], y[: N // 2]])
    n = N // 2
    model = Recorder()
    out = create_method("ips", prob=0.0, mix="cutmix")(model, MethodBatch(x.clone(), y, generator=_gen(0)))
    (seen,) = model.seen
    box_a, perm_a = _cutmix_box_and_partners(seen[:n], x[:n])
    box_b, perm_b = _cutmix_box_and_partners(seen[n:], x[n:])
    assert box_a.any() and torch.equal(box_a, box_b) and torch.equal(perm_a, perm_b)
    lam = out.parts["mix_lam"]
    assert lam.item() == pytest.approx(1 - box_a.sum().item() / (H * W), abs=1e-6)
    target = lam * F.one_hot(y[:n], CLASSES) + (1 - lam) * F.one_hot(y[:n][perm_a], CLASSES)
    z = model.fc(seen.flatten(1))
    torch.testing.assert_close(out.loss, _ips_expected(z, target.float()), rtol=1e-5, atol=1e-6)


def test_ips_with_cutout_after_the_swap_gives_both_views_of_a_pair_the_same_hole():
    x, y = _batch()
    a, b = x[: N // 2], -x[N // 2 :]  # anchors positive, partners negative
    x = torch.cat([a, b])
    y = torch.cat([y[: N // 2], y[: N // 2]])
    n = N // 2
    model = Recorder()
    method = create_method("ips", prob=1.0, mix="cutout", cutout_size=4)
    out = method(model, MethodBatch(x.clone(), y, generator=_gen(4)))
    (seen,) = model.seen
    hole = (seen == 0)[:, 0]
    assert torch.equal(hole[:n], hole[n:]) and hole.flatten(1).any(dim=1).all()
    from_partner = seen[:n] < 0
    assert from_partner.flatten(1).any(dim=1).all(), "the swap happened before the hole was cut"
    swapped_a = torch.where(from_partner, b, a)
    assert torch.equal(seen[:n], torch.where(hole[:n, None], 0.0, swapped_a))
    z = model.fc(seen.flatten(1))
    torch.testing.assert_close(
        out.loss, _ips_expected(z, F.one_hot(y[:n], CLASSES).float()), rtol=1e-5, atol=1e-6
    )
    assert torch.equal(out.targets, y)
