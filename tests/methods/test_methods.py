"""Methods: the registry, and that ce/ips return exactly the loss they promise on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import RecordingLinear

from patchswap import ClassPairBatchSampler
from patchswap.methods import MethodBatch, available_methods, create_method, method_class

N_PAIRS, C, H, W, CLASSES = 6, 1, 4, 4, 5


def Recorder() -> RecordingLinear:  # noqa: N802 - reads like the class it builds
    """A linear classifier of this module's sizes that keeps a copy of every input it sees."""
    return RecordingLinear(C * H * W, CLASSES)


def _pair_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``[anchors..., partners...]``: anchors strictly positive, partners strictly negative pixels."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(N_PAIRS, C, H, W, generator=g) + 0.5
    b = -(torch.rand(N_PAIRS, C, H, W, generator=g) + 0.5)
    y = torch.randint(0, CLASSES, (N_PAIRS,), generator=g)
    return torch.cat([a, b]), torch.cat([y, y])


def _kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL(softmax(teacher / t) || softmax(student / t)), mean over rows, by torch's own kl_div."""
    return F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        log_target=True,
        reduction="batchmean",
    )


# -- registry --------------------------------------------------------------------------------------
def test_registry_lists_ce_ips_and_the_baselines():
    assert available_methods() == [
        "ce",
        "cskd",
        "cutmix",
        "cutout",
        "dlb",
        "ips",
        "kd",
        "label_smoothing",
        "mixup",
        "pskd",
        "tfkd",
    ]
    assert method_class("ips").needs_pairs and not method_class("ce").needs_pairs


def test_unknown_method_suggests_and_lists_valid_names():
    with pytest.raises(ValueError) as e:
        create_method("ipz")
    msg = str(e.value)
    assert "'ipz'" in msg and "did you mean 'ips'" in msg and "valid methods: ce, cskd, cutmix" in msg


def test_unknown_option_is_an_error_naming_it_and_the_valid_ones():
    with pytest.raises(ValueError) as e:
        create_method("ips", probb=0.5)
    msg = str(e.value)
    assert "probb" in msg and "'prob'" in msg and "'temperature'" in msg
    with pytest.raises(ValueError, match="label_smoothin"):
        create_method("ce", label_smoothin=0.1)


def test_bad_ips_option_values_are_rejected():
    with pytest.raises(ValueError, match="partner"):
        create_method("ips", partner="other_class")
    with pytest.raises(ValueError, match="prob"):
        create_method("ips", prob=1.5)
    with pytest.raises(ValueError, match="direction"):
        create_method("ips", direction="sideways")


# -- ce ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_ce_loss_is_cross_entropy(smoothing):
    model = Recorder()
    x, y = _pair_batch()
    out = create_method("ce", label_smoothing=smoothing)(model, MethodBatch(x.clone(), y))
    logits = model.fc(x.flatten(1))
    expected = F.cross_entropy(logits, y, label_smoothing=smoothing)
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.logits, logits)
    assert torch.equal(out.targets, y) and torch.equal(model.seen[0], x)
    out.loss.backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0


# -- ips ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("temperature", "alpha", "gamma", "t2"),
    [(4.0, 1.0, 1.0, True), (2.0, 0.7, 1.3, True), (3.0, 0.5, 2.0, False)],
)
def test_ips_without_swap_is_ce_of_both_views_plus_symmetric_kd(temperature, alpha, gamma, t2):
    model = Recorder()
    x, y = _pair_batch()
    method = create_method("ips", prob=0.0, temperature=temperature, alpha=alpha, gamma=gamma, t2_scaling=t2)
    out = method(model, MethodBatch(x.clone(), y, generator=torch.Generator().manual_seed(0)))

    assert torch.equal(model.seen[0], x), "prob=0 must leave the images alone"
    n = N_PAIRS
    z = model.fc(x.flatten(1))
    za, zb, target = z[:n], z[n:], y[:n]
    ce = (F.cross_entropy(za, target) + F.cross_entropy(zb, target)) / 2
    kd = (_kl(zb, za, temperature) + _kl(za, zb, temperature)) / 2 * (temperature**2 if t2 else 1.0)
    expected = gamma * ce + alpha * kd
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.parts["ce"], ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.parts["kd"], kd * 1.0, rtol=1e-5, atol=1e-6)
    assert out.parts["swap_fraction"].item() == 0.0
    assert torch.equal(out.targets, torch.cat([target, target]))
    assert out.logits.shape == (2 * n, CLASSES)


@pytest.mark.parametrize("detach", [True, False])
def test_ips_gradient_matches_hand_kd_with_and_without_detached_teacher(detach):
    x, y = _pair_batch()
    model = Recorder()
    out = create_method("ips", prob=0.0, gamma=0.0, detach_teacher=detach)(model, MethodBatch(x.clone(), y))
    out.loss.backward()
    got = model.fc.weight.grad.clone()

    model.zero_grad()
    z = model.fc(x.flatten(1))
    za, zb = z[:N_PAIRS], z[N_PAIRS:]
    ta, tb = (za.detach(), zb.detach()) if detach else (za, zb)
    ((_kl(zb, ta, 4.0) + _kl(za, tb, 4.0)) / 2 * 16).backward()
    torch.testing.assert_close(got, model.fc.weight.grad, rtol=1e-4, atol=1e-7)
    assert got.abs().sum() > 0


def test_detaching_the_teacher_changes_the_gradient():
    x, y = _pair_batch()
    grads = []
    for detach in (True, False):
        model = Recorder()
        out = create_method("ips", prob=0.0, gamma=0.0, detach_teacher=detach)(
            model, MethodBatch(x.clone(), y)
        )
        out.loss.backward()
        grads.append(model.fc.weight.grad)
    assert not torch.allclose(grads[0], grads[1])


def test_ips_with_prob_one_feeds_the_model_swapped_pairs():
    model = Recorder()
    x, y = _pair_batch()
    gen = torch.Generator().manual_seed(3)
    out = create_method("ips", prob=1.0, grid=2)(model, MethodBatch(x.clone(), y, generator=gen))

    (seen,) = model.seen
    n = N_PAIRS
    a, b = x[:n], x[n:]
    sa, sb = seen[:n], seen[n:]
    from_partner = sa < 0  # anchors are positive, partners negative: the sign says where a pixel came from
    # Every pixel of each view is the same-position pixel of one of the two inputs ...
    assert torch.equal(sa, torch.where(from_partner, b, a))
    # ... and the two views are complementary: what one gave, the other took.
    assert torch.equal(sb, torch.where(from_partner, a, b))
    # Whole 2x2 cells move, every pair swaps (prob=1), and 1..3 of the 4 cells (uniform k rule).
    cells = from_partner.view(n, C, 2, H // 2, 2, W // 2)
    assert torch.equal(cells.all(dim=(3, 5)), cells.any(dim=(3, 5)))
    per_pair = from_partner.float().mean(dim=(1, 2, 3))
    assert ((per_pair >= 0.25) & (per_pair <= 0.75)).all()
    torch.testing.assert_close(out.parts["swap_fraction"], per_pair.mean())
    # The loss is the IPS loss of the swapped views.
    z = model.fc(seen.flatten(1))
    ce = (F.cross_entropy(z[:n], y[:n]) + F.cross_entropy(z[n:], y[:n])) / 2
    kd = (_kl(z[n:], z[:n], 4.0) + _kl(z[:n], z[n:], 4.0)) / 2 * 16
    torch.testing.assert_close(out.loss, ce + kd, rtol=1e-5, atol=1e-6)


class _BatchNormNet(torch.nn.Module):
    """BatchNorm in training mode: its output for a row depends on the other rows of the forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.bn = torch.nn.BatchNorm1d(C * H * W)
        self.fc = torch.nn.Linear(C * H * W, CLASSES)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.fc(self.bn(x.flatten(1)))


@pytest.mark.parametrize("separate", [False, True])
def test_ips_views_share_one_forward_unless_separate_views(separate):
    x, y = _pair_batch()
    gen = torch.Generator().manual_seed(3)
    model = _BatchNormNet()
    out = create_method("ips", prob=0.0, separate_views=separate)(
        model, MethodBatch(x.clone(), y, generator=gen)
    )
    n = N_PAIRS
    assert model.calls == ([n, n] if separate else [2 * n])
    ref = _BatchNormNet()  # same init; statistics over each view alone, or over both
    logits = torch.cat([ref(x[:n]), ref(x[n:])]) if separate else ref(x)
    torch.testing.assert_close(out.logits, logits)
    # prob=0: no swap, so the loss is CE on both views + the symmetric KL between them.
    ce = (F.cross_entropy(logits[:n], y[:n]) + F.cross_entropy(logits[n:], y[:n])) / 2
    kd = (_kl(logits[n:], logits[:n], 4.0) + _kl(logits[:n], logits[n:], 4.0)) / 2 * 16
    torch.testing.assert_close(out.loss, ce + kd, rtol=1e-5, atol=1e-6)


def test_ips_swaps_follow_the_generator():
    def swapped_mask(seed: int) -> torch.Tensor:
        model = Recorder()
        x, y = _pair_batch()
        create_method("ips", prob=1.0)(
            model, MethodBatch(x, y, generator=torch.Generator().manual_seed(seed))
        )
        return model.seen[0] < 0

    assert torch.equal(swapped_mask(5), swapped_mask(5))
    assert not torch.equal(swapped_mask(5), swapped_mask(6))


def test_ips_rejects_an_odd_batch():
    x, y = _pair_batch()
    with pytest.raises(ValueError, match="even"):
        create_method("ips")(Recorder(), MethodBatch(x[:-1], y[:-1]))


def test_prob_warmup_ramps_prob_linearly_then_holds():
    method = create_method("ips", prob=0.8, prob_warmup_epochs=4)
    assert [method.current_prob(e) for e in (0, 1, 2, 4, 9)] == pytest.approx([0.0, 0.2, 0.4, 0.8, 0.8])
    assert create_method("ips", prob=0.8).current_prob(0) == 0.8

    # Epoch 0 of the warm-up: prob is 0, so nothing swaps although prob=1 is the target.
    ramp = create_method("ips", prob=1.0, prob_warmup_epochs=2)
    model = Recorder()
    x, y = _pair_batch()
    out = ramp(model, MethodBatch(x.clone(), y, generator=torch.Generator().manual_seed(0), epoch=0))
    assert torch.equal(model.seen[0], x) and out.parts["swap_fraction"].item() == 0.0
    # After the warm-up every pair swaps.
    out = ramp(model, MethodBatch(x.clone(), y, generator=torch.Generator().manual_seed(0), epoch=2))
    assert ramp.swap.prob == 1.0
    assert ((model.seen[1][:N_PAIRS] < 0).flatten(1).any(dim=1)).all()


def test_sampler_options_pass_the_partner_rule():
    # The default pairs inside P x K batches of ce's size; the paper's sampler passes the partner rule.
    assert create_method("ips").sampler_options(64) == {
        "pairs_per_batch": 32,
        "mode": "in_batch",
        "samples_per_class": 0,
    }
    assert create_method("ips", pairing="partner").sampler_options(64) == {"partner": "same_class"}
    opts = create_method("ips", pairing="partner", partner="any_class").sampler_options(64)
    assert opts == {"partner": "any_class"}
    assert create_method("ce").sampler_options(64) == {}

    labels = np.repeat(np.arange(10), 20)
    paper = create_method("ips", pairing="partner").sampler_options(64)
    same = ClassPairBatchSampler(labels, 50, seed=0, **paper)
    anyc = ClassPairBatchSampler(labels, 50, seed=0, **opts)
    assert (labels[same.pairs()[:, 0]] == labels[same.pairs()[:, 1]]).all()
    mismatched = (labels[anyc.pairs()[:, 0]] != labels[anyc.pairs()[:, 1]]).mean()
    assert mismatched > 0.5  # with 10 classes about 90% of any-class partners differ


@pytest.mark.parametrize("pairing", ["partner", "half", "in_batch"])
def test_pairing_sets_the_images_per_step_and_per_epoch(pairing):
    """partner: 2 x batch images per step; half and in_batch: ce's batch and steps (ce's cost)."""
    labels = np.repeat(np.arange(10), 64)  # 640 images
    batch = 64
    opts = create_method("ips", pairing=pairing).sampler_options(batch)
    sampler = ClassPairBatchSampler(labels, **{"pairs_per_batch": batch, **opts}, seed=0)
    batches = list(sampler)
    per_step = {len(b) for b in batches}
    assert per_step == ({2 * batch} if pairing == "partner" else {batch})
    assert len(batches) == len(labels) // batch  # as many steps as a plain epoch
    used = np.concatenate(batches)
    for b in batches:
        a, p = np.asarray(b[: len(b) // 2]), np.asarray(b[len(b) // 2 :])
        assert (labels[a] == labels[p]).all()
    if pairing == "in_batch":
        assert sampler.samples_per_class == 8  # 64 images from 10 classes: 8 classes x 8
        assert len(set(used.tolist())) == len(used) == len(labels), "every image once"


def test_pairing_needs_an_even_batch_and_same_class_partners():
    with pytest.raises(ValueError, match="data.batch_size to an even number"):
        create_method("ips", pairing="half").sampler_options(33)
    with pytest.raises(ValueError, match="partner=same_class"):
        create_method("ips", pairing="in_batch", partner="any_class")
    with pytest.raises(ValueError, match="pairing must be one of"):
        create_method("ips", pairing="pairs")
    with pytest.raises(ValueError, match="samples_per_class must be even"):
        create_method("ips", pairing="in_batch", samples_per_class=3)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("constant", [2, 2, 2, 2]), ("ramp", [0, 0.5, 1, 1.5]), ("decay", [2, 1.5, 1, 0.5])],
)
def test_alpha_schedule_sets_the_kl_weight_of_each_epoch(schedule, expected):
    method = create_method("ips", alpha=2.0, alpha_schedule=schedule)
    assert [method.current_alpha(e, 4) for e in range(4)] == expected
    x, y = _pair_batch()
    g = torch.Generator().manual_seed(0)
    method(Recorder(), MethodBatch(x.clone(), y, generator=g, epoch=1, max_epochs=4))
    assert method.loss_fn.alpha == expected[1], "the step uses its epoch's weight"
    with pytest.raises(ValueError, match="alpha_schedule"):
        create_method("ips", alpha_schedule="cosine")
