"""FGSM and PGD invariants on the session's tiny trained digits model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from patchswap.evaluation.adversarial import (
    DEFAULT_EPS,
    PixelModel,
    eps_key,
    fgsm,
    fgsm_accuracy,
    pgd,
    pgd_accuracy,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _batches(images: torch.Tensor, labels: torch.Tensor, size: int = 128):
    for i in range(0, len(labels), size):
        yield images[i : i + size], labels[i : i + size]


def _clean_acc(pixel: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return int((pixel(images.float() / 255).argmax(1) == labels).sum()) / len(labels)


def test_pixel_model_is_the_eval_pipeline(tiny_eval):
    x = tiny_eval.images[:50]
    with torch.no_grad():
        a = tiny_eval.pixel(x.float() / 255)
        b = tiny_eval.model(tiny_eval.bundle.eval_augment(x))
    assert torch.equal(a, b)


def test_eps_zero_is_clean_accuracy_and_accuracy_falls_with_eps(tiny_eval):
    images, labels, pixel = tiny_eval.images, tiny_eval.labels, tiny_eval.pixel
    clean = _clean_acc(pixel, images, labels)
    eps = (*DEFAULT_EPS, 16 / 255)
    f = fgsm_accuracy(pixel, _batches(images, labels), eps)
    p = pgd_accuracy(pixel, _batches(images, labels), eps, steps=5, seed=0)
    assert list(f) == list(p) == [eps_key(e) for e in eps]
    assert f["0"] == clean and p["0"] == clean
    for acc in (f, p):
        ordered = [acc[eps_key(e)] for e in sorted(eps)]
        assert all(b <= a for a, b in zip(ordered, ordered[1:], strict=False)), ordered
        assert ordered[-1] < ordered[0]  # the attacks do something
    assert p[eps_key(16 / 255)] <= f[eps_key(16 / 255)]  # PGD is the stronger attack here
    assert pgd_accuracy(pixel, _batches(images, labels), eps, steps=5, seed=0) == p  # seeded


def test_fgsm_moves_every_unclamped_pixel_by_exactly_eps(tiny_eval):
    x = tiny_eval.images[:64].float() / 255
    y = tiny_eval.labels[:64]
    eps = 4 / 255
    adv = fgsm(tiny_eval.pixel, x, y, eps)
    x_g = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(tiny_eval.pixel(x_g), y, reduction="sum"), x_g)
    step = grad.sign()
    delta = adv - x
    free = (step != 0) & (x + eps * step > 0) & (x + eps * step < 1)
    assert free.float().mean() > 0.3
    assert torch.allclose(delta[free].abs(), torch.full_like(delta[free], eps), atol=1e-6)
    assert torch.equal(delta[free].sign(), step[free])
    clamped = (step != 0) & ~free
    assert torch.all((adv[clamped] == 0) | (adv[clamped] == 1))
    assert delta.abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_pgd_stays_in_the_ball_and_raises_the_loss(tiny_eval):
    x = tiny_eval.images[:64].float() / 255
    y = tiny_eval.labels[:64]
    for eps in (1 / 255, 8 / 255, 0.05):
        gen = torch.Generator().manual_seed(1)
        adv = pgd(tiny_eval.pixel, x, y, eps, steps=7, generator=gen)
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            clean_loss = F.cross_entropy(tiny_eval.pixel(x), y)
            adv_loss = F.cross_entropy(tiny_eval.pixel(adv), y)
        assert adv_loss > clean_loss
        again = pgd(tiny_eval.pixel, x, y, eps, steps=7, generator=torch.Generator().manual_seed(1))
        assert torch.equal(adv, again)
    assert torch.equal(pgd(tiny_eval.pixel, x, y, 0.0), x)


def test_attacks_leave_the_model_as_they_found_it(tiny_eval):
    model = PixelModel(tiny_eval.model, tiny_eval.bundle.mean, tiny_eval.bundle.std)
    model.train()
    model.zero_grad(set_to_none=True)
    flags = [p.requires_grad for p in model.parameters()]
    x, y = tiny_eval.images[:8].float() / 255, tiny_eval.labels[:8]
    fgsm(model, x, y, 0.01)
    pgd(model, x, y, 0.01, steps=2)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    tiny_eval.model.eval()
