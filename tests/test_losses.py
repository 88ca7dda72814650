"""IPSLoss against hand computations, and how the seed's loss differs."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from patchswap import (
    DenseIPSLoss,
    IPSLoss,
    apply_cell_mask,
    distillation_kl,
    kl_with_temperature,
    patch_swap_targets,
    soft_cross_entropy,
)

SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed_ips.py"

ZA = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]
ZB = [[1.0, 1.5, 0.0], [-0.5, 0.2, 2.0]]
Y = [0, 2]


def _softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    s = sum(e)
    return [v / s for v in e]


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _hand(t=4.0, alpha=1.0, gamma=1.0, direction="symmetric", t2=True, share=0.5):
    ce = 0.0
    kd_rows = []
    teacher_a = 0
    for za, zb, y in zip(ZA, ZB, Y, strict=True):
        ce += (-math.log(_softmax(za)[y]) - math.log(_softmax(zb)[y])) / 2
        pa, pb = _softmax(za, t), _softmax(zb, t)
        a_teaches, b_teaches = _kl(pa, pb), _kl(pb, pa)
        a_conf = _softmax(za)[y] >= _softmax(zb)[y]
        teacher_a += a_conf
        confident = a_teaches if a_conf else b_teaches
        if direction == "symmetric":
            kd_rows.append((a_teaches + b_teaches) / 2)
        elif direction == "mixed":
            kd_rows.append(share * confident + (1 - share) * (a_teaches + b_teaches) / 2)
        else:
            kd_rows.append(confident)
    scale = t * t if t2 else 1.0
    ce /= len(Y)
    kd = scale * sum(kd_rows) / len(Y)
    return gamma * ce + alpha * kd, ce, kd, teacher_a / len(Y)


@pytest.mark.parametrize("direction", ["symmetric", "confident", "mixed"])
@pytest.mark.parametrize(("t", "alpha", "gamma", "t2"), [(4.0, 1.0, 1.0, True), (2.0, 0.5, 2.0, False)])
def test_matches_a_hand_computation(direction, t, alpha, gamma, t2):
    out = IPSLoss(temperature=t, alpha=alpha, gamma=gamma, direction=direction, t2_scaling=t2)(
        torch.tensor(ZA), torch.tensor(ZB), torch.tensor(Y)
    )
    loss, ce, kd, frac = _hand(t, alpha, gamma, direction, t2)
    assert out.loss.item() == pytest.approx(loss, rel=1e-5)
    assert out.ce.item() == pytest.approx(ce, rel=1e-5)
    assert out.kd.item() == pytest.approx(kd, rel=1e-5)
    assert out.teacher_a_fraction.item() == pytest.approx(frac)


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_mixed_direction_weighs_the_confident_term_by_its_share(share):
    za, zb, y = torch.tensor(ZA), torch.tensor(ZB), torch.tensor(Y)
    out = IPSLoss(direction="mixed", confident_share=share)(za, zb, y)
    assert out.kd.item() == pytest.approx(_hand(direction="mixed", share=share)[2], rel=1e-5)
    # Its ends are the two pure directions.
    ends = {0.0: "symmetric", 1.0: "confident"}
    if share in ends:
        pure = IPSLoss(direction=ends[share])(za, zb, y).loss.item()
        assert out.loss.item() == pytest.approx(pure, rel=1e-6)
    with pytest.raises(ValueError, match="confident_share"):
        IPSLoss(direction="mixed", confident_share=1.5)


def test_golden_value_of_the_default_loss():
    out = IPSLoss()(torch.tensor(ZA), torch.tensor(ZB), torch.tensor(Y))
    assert out.loss.item() == pytest.approx(1.1300537, abs=1e-6)  # from _hand(), pure Python


def test_probability_targets_equal_index_targets_when_one_hot_and_compose_with_smoothing():
    za, zb, y = torch.tensor(ZA), torch.tensor(ZB), torch.tensor(Y)
    loss = IPSLoss(direction="confident")
    assert torch.allclose(loss(za, zb, y).loss, loss(za, zb, F.one_hot(y, 3).float()).loss)
    smooth = 0.9 * F.one_hot(y, 3).float() + 0.1 / 3
    assert torch.allclose(IPSLoss(label_smoothing=0.1)(za, zb, y).loss, IPSLoss()(za, zb, smooth).loss)


def test_teacher_side_gets_no_gradient_from_kd_when_detached():
    za = torch.tensor(ZA, requires_grad=True)
    zb = torch.tensor(ZB, requires_grad=True)
    kl = distillation_kl(zb, za)  # a teaches b
    kl.backward()
    assert za.grad is None and zb.grad is not None and zb.grad.abs().sum() > 0
    za.grad = zb.grad = None
    distillation_kl(zb, za, detach_teacher=False).backward()
    assert za.grad is not None and za.grad.abs().sum() > 0


def test_confident_direction_only_moves_the_less_confident_view_through_kd():
    za = torch.tensor(ZA, requires_grad=True)
    zb = torch.tensor(ZB, requires_grad=True)
    # gamma = 0 isolates the KD term; row 0: a is more confident on class 0, so only b's row 0 moves.
    IPSLoss(gamma=0.0, direction="confident")(za, zb, torch.tensor(Y)).loss.backward()
    assert torch.all(za.grad[0] == 0) and zb.grad[0].abs().sum() > 0
    assert torch.all(zb.grad[1] == 0) and za.grad[1].abs().sum() > 0


def test_kl_is_computed_in_float32_under_autocast():
    za = torch.tensor(ZA).bfloat16()
    zb = torch.tensor(ZB).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = IPSLoss()(za, zb, torch.tensor(Y))
    assert out.loss.dtype == torch.float32
    ref = IPSLoss()(za.float(), zb.float(), torch.tensor(Y))
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-6)
    assert soft_cross_entropy(za, torch.tensor(Y)).dtype == torch.float32


def test_bad_input_is_reported():
    loss = IPSLoss()
    za, zb, y = torch.tensor(ZA), torch.tensor(ZB), torch.tensor(Y)
    with pytest.raises(ValueError, match="must both be"):
        loss(za, zb[:, :2], y)
    with pytest.raises(ValueError, match="labels for 2 logits rows"):
        loss(za, zb, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="must be integers"):
        loss(za, zb, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[N, num_classes\]"):
        loss(za, zb, torch.ones(2, 4) / 4)
    with pytest.raises(ValueError, match="direction must be one of"):
        IPSLoss(direction="both")
    with pytest.raises(ValueError, match="temperature must be positive"):
        IPSLoss(temperature=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": float("nan")}, "alpha must be a finite number, got nan"),
        ({"gamma": float("inf")}, "gamma must be a finite number"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"alpha": -1.0}, "alpha and gamma must be non-negative"),
        ({"label_smoothing": float("nan")}, "label_smoothing must be in"),
    ],
)
def test_hyper_parameters_are_checked_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IPSLoss(**kwargs)


def test_bad_values_are_reported_on_cpu_tensors():
    """Issue 18: NaN/inf or integer logits, labels out of range and probabilities that do not sum to
    1 used to pass silently or fail with torch's bare IndexError."""
    loss = IPSLoss()
    za, zb, y = torch.tensor(ZA), torch.tensor(ZB), torch.tensor(Y)
    c = za.shape[1]
    with pytest.raises(
        ValueError, match=rf"labels must be in \[0, {c}\) for {c} classes, got values from 0 to {c}"
    ):
        loss(za, zb, torch.tensor([0, c]))
    with pytest.raises(ValueError, match="labels must be in"):
        loss(za, zb, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="logits_b holds NaN or inf"):
        loss(za, zb.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match="logits_a holds NaN or inf"):
        loss(za.clone().fill_(float("inf")), zb, y)
    with pytest.raises(ValueError, match="logits must be floating point"):
        loss(za.long(), zb.long(), y)
    with pytest.raises(ValueError, match="must sum to 1 over the classes"):
        loss(za, zb, torch.ones(2, c))
    with pytest.raises(ValueError, match="non-negative"):
        loss(za, zb, torch.tensor([[1.5, -0.5] + [0.0] * (c - 2)] * 2))
    soft = torch.softmax(torch.randn(2, c), dim=1)
    assert torch.isfinite(loss(za, zb, soft).loss)  # normalised probabilities pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_value_checks_do_not_sync_the_device():
    """On a GPU only the free checks run: no host-device synchronisation in the loss."""
    loss = IPSLoss()
    za, zb, y = (torch.tensor(v).cuda() for v in (ZA, ZB, Y))
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss(za, zb, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not SEED_FILE.exists(), reason="../shared/reference/seed_ips.py is absent")
def test_how_the_seed_loss_differs():
    """The seed's SelfDistillationLoss: its second KL passes probabilities where kl_div expects
    log-probabilities (and log-probabilities as the target), which makes that term NaN; it has
    no T^2 factor and never stops the gradient."""
    spec = importlib.util.spec_from_file_location("seed_ips", SEED_FILE)
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    za = torch.tensor(ZA, requires_grad=True)
    zb = torch.tensor(ZB, requires_grad=True)
    y = torch.tensor(Y)
    seed_loss = seed.SelfDistillationLoss(temperature=4.0)(za, zb, y)
    assert torch.isnan(seed_loss), "the misused kl_div gives NaN (log of a negative 'probability')"
    # Its first KL term alone is KL(p_b || p_a) at T, without T^2, with gradient into b (the 'teacher').
    t = 4.0
    first = F.kl_div(F.log_softmax(za / t, 1), F.softmax(zb / t, 1), reduction="batchmean")
    ours = distillation_kl(za, zb, t, t2_scaling=False)
    assert first.item() == pytest.approx(ours.item(), rel=1e-5)
    first.backward()
    assert zb.grad is not None and zb.grad.abs().sum() > 0  # no stop-gradient in the seed


def test_kl_with_temperature_matches_a_hand_computation():
    """The one KL helper: rows of [N, C], or pixels of [N, C, H, W] (classes on dim 1)."""
    t = 2.0
    rows = [t**2 * _kl(_softmax(zt, t), _softmax(zs, t)) for zs, zt in zip(ZA, ZB, strict=True)]
    za, zb = torch.tensor(ZA), torch.tensor(ZB)
    assert kl_with_temperature(za, zb, t).tolist() == pytest.approx(rows, rel=1e-5)
    assert kl_with_temperature(za, zb, t, reduction="batchmean").item() == pytest.approx(
        sum(rows) / 2, rel=1e-5
    )
    assert kl_with_temperature(za, zb, t, reduction="sum").item() == pytest.approx(sum(rows), rel=1e-5)
    plain = kl_with_temperature(za, zb, t, t2_scaling=False)
    assert plain.tolist() == pytest.approx([r / t**2 for r in rows], rel=1e-5)
    # The two rows as the two pixels of a 1x2 logit map: one value per pixel, the same numbers.
    maps_s, maps_t = za.T.reshape(1, 3, 1, 2), zb.T.reshape(1, 3, 1, 2)
    assert kl_with_temperature(maps_s, maps_t, t).flatten().tolist() == pytest.approx(rows, rel=1e-5)
    assert torch.equal(distillation_kl(za, zb, t, reduction="none"), kl_with_temperature(za, zb, t))
    with pytest.raises(ValueError, match="same shape with classes on dim 1"):
        kl_with_temperature(za, zb[:1], t)
    with pytest.raises(ValueError, match="reduction must be"):
        kl_with_temperature(za, zb, t, reduction="mean")


# --- DenseIPSLoss -----------------------------------------------------------------------------

IGNORE = 255


def _dense_inputs(seed=0, n=2, k=2, size=4):
    g = torch.Generator().manual_seed(seed)
    za, zb, zsa, zsb = (torch.randn(n, k, size, size, generator=g) for _ in range(4))
    ya = torch.randint(0, k, (n, size, size), generator=g)
    yb = torch.randint(0, k, (n, size, size), generator=g)
    ya[0, 0, 0] = ya[1, 3, 2] = IGNORE
    yb[0, 1, 3] = IGNORE  # inside pair 0's swapped cell (0, 1): ignored in a'
    # Pair 0 swaps cells (0, 1) and (1, 0); pair 1 does not swap.
    cells = torch.tensor([[[False, True], [True, False]], [[False, False], [False, False]]])
    return za, zb, zsa, zsb, ya, yb, cells


def _dense_hand(za, zb, zsa, zsb, ya, yb, cells, t=4.0, alpha=1.0, gamma=1.0, t2=True):
    """Pure-Python loops over pixels, following the docstring of DenseIPSLoss."""
    n, k, h, w = za.shape
    ce_sum, ce_count, kl_sum, kl_count = 0.0, 0, 0.0, 0
    for i in range(n):
        swaps = bool(cells[i].any())
        for r in range(h):
            for c in range(w):
                swapped = bool(cells[i, r * 2 // h, c * 2 // w])
                pix = {
                    name: z[i, :, r, c].tolist()
                    for name, z in (("a", za), ("b", zb), ("sa", zsa), ("sb", zsb))
                }
                ysa, ysb = (yb[i, r, c], ya[i, r, c]) if swapped else (ya[i, r, c], yb[i, r, c])
                teach_a, teach_b = (pix["b"], pix["a"]) if swapped else (pix["a"], pix["b"])
                for z, y in (
                    (pix["a"], ya[i, r, c]),
                    (pix["b"], yb[i, r, c]),
                    (pix["sa"], ysa),
                    (pix["sb"], ysb),
                ):
                    if y != IGNORE:
                        ce_sum -= math.log(_softmax(z)[y])
                        ce_count += 1
                for z, teacher, y in ((pix["sa"], teach_a, ysa), (pix["sb"], teach_b, ysb)):
                    if y != IGNORE:
                        kl_count += 1
                        if swaps:
                            kl_sum += _kl(_softmax(teacher, t), _softmax(z, t))
    ce = ce_sum / ce_count
    kl = kl_sum / kl_count * (t * t if t2 else 1.0)
    return gamma * ce + alpha * kl, ce, kl


@pytest.mark.parametrize(("t", "alpha", "gamma", "t2"), [(4.0, 1.0, 1.0, True), (2.0, 0.5, 2.0, False)])
def test_dense_loss_matches_a_hand_computation(t, alpha, gamma, t2):
    inputs = _dense_inputs()
    out = DenseIPSLoss(temperature=t, alpha=alpha, gamma=gamma, t2_scaling=t2)(*inputs)
    loss, ce, kl = _dense_hand(*inputs, t=t, alpha=alpha, gamma=gamma, t2=t2)
    assert out.loss.item() == pytest.approx(loss, rel=1e-5)
    assert out.ce.item() == pytest.approx(ce, rel=1e-5)
    assert out.kl.item() == pytest.approx(kl, rel=1e-5) and kl > 0


def test_dense_kl_is_exactly_zero_when_no_pair_swapped_and_near_zero_for_a_consistent_network():
    za, zb, zsa, zsb, ya, yb, cells = _dense_inputs()
    loss = DenseIPSLoss()
    out = loss(za, zb, zsa, zsb, ya, yb, torch.zeros_like(cells))  # swapped views differ: still zero
    assert out.kl.item() == 0.0 and out.loss.item() == pytest.approx(out.ce.item())
    # A network whose swapped-view logits are the swapped original logits has nothing to distil.
    sa, sb = apply_cell_mask(za, zb, cells)
    assert loss(za, zb, sa, sb, ya, yb, cells).kl.item() == pytest.approx(0.0, abs=1e-6)


def test_dense_gradient_does_not_reach_the_teacher_logits():
    za, zb, zsa, zsb, ya, yb, cells = (x.requires_grad_(x.is_floating_point()) for x in _dense_inputs())
    DenseIPSLoss(gamma=0.0)(za, zb, zsa, zsb, ya, yb, cells).loss.backward()
    assert torch.all(za.grad == 0) and torch.all(zb.grad == 0)
    assert zsa.grad.abs().sum() > 0 and zsb.grad.abs().sum() > 0
    assert torch.all(zsa.grad[1] == 0)  # the pair that did not swap has no KL


def test_dense_ignored_pixels_do_not_change_the_loss():
    za, zb, zsa, zsb, ya, yb, cells = _dense_inputs()
    loss = DenseIPSLoss()
    ref = loss(za, zb, zsa, zsb, ya, yb, cells).loss
    tsa, tsb = patch_swap_targets(ya, yb, cells)

    def bump(z, where):  # a class-dependent change (a constant shift would not move the softmax)
        return torch.where(where[:, None], z + torch.tensor([5.0, -5.0])[:, None, None], z)

    # Logits at ignored pixels: of a swapped view (its CE and KL) and of an original (its CE and the
    # teacher it provides, whose swapped target is the same ignored label).
    assert torch.equal(loss(za, zb, bump(zsa, tsa == IGNORE), zsb, ya, yb, cells).loss, ref)
    assert torch.equal(loss(za, zb, zsa, bump(zsb, tsb == IGNORE), ya, yb, cells).loss, ref)
    assert torch.equal(loss(bump(za, ya == IGNORE), zb, zsa, zsb, ya, yb, cells).loss, ref)
    assert torch.equal(loss(za, bump(zb, yb == IGNORE), zsa, zsb, ya, yb, cells).loss, ref)
    # ...while the same change at a labelled pixel does move it.
    other = torch.zeros_like(ya, dtype=torch.bool)
    other[0, 2, 2] = True
    assert not torch.equal(loss(za, zb, bump(zsa, other), zsb, ya, yb, cells).loss, ref)
    assert (tsa == IGNORE).sum() == 3 and (ya == IGNORE).sum() == 2  # the checks above are not vacuous


def test_dense_loss_is_float32_under_bf16_autocast():
    za, zb, zsa, zsb, ya, yb, cells = _dense_inputs()
    half = [z.bfloat16() for z in (za, zb, zsa, zsb)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = DenseIPSLoss()(*half, ya, yb, cells)
    assert out.loss.dtype == torch.float32
    ref = DenseIPSLoss()(*(z.float() for z in half), ya, yb, cells)
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-6)


def test_dense_loss_takes_channels_last_and_patch_size():
    za, zb, zsa, zsb, ya, yb, cells = _dense_inputs()
    cl = [z.contiguous(memory_format=torch.channels_last) for z in (za, zb, zsa, zsb)]
    loss = DenseIPSLoss()
    assert torch.equal(loss(*cl, ya, yb, cells).loss, loss(za, zb, zsa, zsb, ya, yb, cells).loss)
    same = loss(za, zb, zsa, zsb, ya, yb, cells, patch_size=2).loss
    assert same.item() == pytest.approx(loss(za, zb, zsa, zsb, ya, yb, cells).loss.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("index", "bad", "match"),
    [
        (1, torch.zeros(2, 3, 4, 4), r"logits_b must be \[N, K, H, W\] = \(2, 2, 4, 4\)"),
        (3, torch.zeros(2, 2, 2, 2), r"logits_swap_b must be \[N, K, H, W\]"),
        (0, torch.zeros(2, 4, 4), r"logits_a must be \[N, K, H, W\]"),
        (5, torch.zeros(2, 4, 5, dtype=torch.int64), r"target_b must be \[N, H, W\] = \(2, 4, 4\)"),
        (4, torch.zeros(2, 4, 4), "integer class indices"),
        (6, torch.zeros(1, 2, 2, dtype=torch.bool), r"cell_mask must be \[N, rows, cols\] with N = 2"),
    ],
)
def test_dense_bad_shapes_name_the_tensor_and_the_expected_shape(index, bad, match):
    inputs = list(_dense_inputs())
    inputs[index] = bad
    with pytest.raises(ValueError, match=match):
        DenseIPSLoss()(*inputs)
    with pytest.raises(ValueError, match="temperature must be positive"):
        DenseIPSLoss(temperature=0.0)
