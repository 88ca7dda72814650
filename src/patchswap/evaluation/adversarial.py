"""White-box L-inf attacks in pixel space: FGSM and PGD-k, batched on the model's device.

Perturbations live in ``[0, 1]`` pixel units *before* normalisation: the attacked function is
``PixelModel = normalize -> model`` on images in ``[0, 1]``, so ``eps = 8/255`` means eight grey
levels whatever the dataset's mean and std. Every adversarial image is clamped to ``[0, 1]``; the
model stays in eval mode (BatchNorm uses running statistics, no dropout) and its parameters get no
gradients.

* FGSM (Goodfellow et al. 2015): ``x + eps * sign(grad_x CE(f(x), y))``. The gradient does not depend
  on eps, so one forward/backward per batch serves every eps. Accuracy at eps is plain accuracy on
  those images.
* PGD-k (Madry et al. 2018): a uniform random start in the eps-ball, then ``k`` signed-gradient steps
  of ``2.5 * eps / k`` (Madry's step rule: the walk can cross the ball), each projected back onto the
  ball and onto ``[0, 1]``. Robust accuracy counts an image only when the clean image and every attack
  at this or a smaller eps left it correctly classified: a misclassified point inside a smaller ball
  also lies inside the larger one. Images already broken are not attacked again, which makes PGD over
  several eps about as cheap as one attack at the smallest eps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import seeding

__all__ = ["DEFAULT_EPS", "PixelModel", "eps_key", "fgsm", "fgsm_accuracy", "pgd", "pgd_accuracy"]

# 0, 1, 2, 4 and 8 grey levels, and the seed's 0.01 (about 2.55/255).
DEFAULT_EPS: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 0.01)


def eps_key(eps: float) -> str:
    """Stable text key of an eps in results: ``0``, ``0.00392157``, ``0.01``."""
    return f"{float(eps):.6g}"


class PixelModel(nn.Module):
    """``model((x - mean) / std)`` for ``x`` in ``[0, 1]``: the function the attacks differentiate.

    Normalisation is the same arithmetic as the training pipeline's eval transform
    (``(uint8 / 255 - mean) / std``), so clean logits match it bit for bit.
    """

    def __init__(
        self, model: nn.Module, mean: Sequence[float], std: Sequence[float], *, channels_last: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.register_buffer("mean", torch.as_tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


@contextlib.contextmanager
def _attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; both restored afterwards."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, d CE / d x) at ``x``; the loss is summed so each image's gradient is its own."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits.float(), y, reduction="sum"), x)
    return logits.detach(), grad


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM images ``clamp(x + eps * sign(grad), 0, 1)`` for ``x`` in ``[0, 1]``."""
    with _attack_mode(model):
        _, grad = _input_grad(model, x, y)
    return (x + eps * grad.sign()).clamp_(0.0, 1.0).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf PGD images within ``eps`` of ``x`` and inside ``[0, 1]`` (default step ``2.5 * eps / steps``)."""
    if eps == 0 or steps < 1:
        return x.clone()
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    adv = x.clone()
    if random_start:
        dev = generator.device if generator is not None else x.device
        noise = torch.rand(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)
        adv = (x + (2 * noise - 1) * eps).clamp_(0.0, 1.0)
    with _attack_mode(model):
        for _ in range(steps):
            _, grad = _input_grad(model, adv, y)
            adv = torch.minimum(torch.maximum(adv + alpha * grad.sign(), lo), hi).detach()
    return adv


def _to_unit(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (0..255) -> float32 in [0, 1] on ``device`` (floats are taken as already in [0, 1])."""
    x = images.to(device, non_blocking=True)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def fgsm_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    eps: Sequence[float] = DEFAULT_EPS,
    *,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Accuracy on FGSM images for each eps (key :func:`eps_key`); ``batches`` yield uint8 images."""
    device = torch.device(device)
    correct = dict.fromkeys(eps, 0)
    total = 0
    with _attack_mode(model):
        for images, labels in batches:
            x, y = _to_unit(images, device), labels.to(device).long()
            logits, grad = _input_grad(model, x, y)
            step = grad.sign()
            with torch.no_grad():
                for e in eps:
                    out = logits if e == 0 else model((x + e * step).clamp_(0.0, 1.0))
                    correct[e] += int((out.argmax(1) == y).sum())
            total += len(y)
    return {eps_key(e): correct[e] / max(total, 1) for e in eps}


def pgd_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    eps: Sequence[float] = DEFAULT_EPS,
    *,
    steps: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Robust accuracy under PGD-``steps`` for each eps (images broken at a smaller eps stay broken)."""
    device = torch.device(device)
    order = sorted(set(float(e) for e in eps))
    robust_count = dict.fromkeys(order, 0)
    total = 0
    for b, (images, labels) in enumerate(batches):
        x, y = _to_unit(images, device), labels.to(device).long()
        model.eval()
        with torch.no_grad():
            robust = model(x).argmax(1) == y
        for i, e in enumerate(order):
            if e > 0 and bool(robust.any()):
                idx = robust.nonzero().squeeze(1)
                # The stream (seed, batch, eps index), 32-bit as recorded (see patchswap.seeding).
                gen = seeding.generator(seed, b, i, device=device, bits=32)
                adv = pgd(model, x[idx], y[idx], e, steps=steps, generator=gen)
                with torch.no_grad():
                    robust[idx] = model(adv).argmax(1) == y[idx]
            robust_count[e] += int(robust.sum())
        total += len(y)
    return {eps_key(e): robust_count[float(e)] / max(total, 1) for e in eps}
