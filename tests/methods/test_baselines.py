"""Baseline methods (label smoothing, CS-KD, PS-KD, Tf-KD, DLB, KD): losses by hand, state, end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import RecordingLinear
from torch import nn

from patchswap.cli import main
from patchswap.methods import MethodBatch, available_methods, create_method, method_class
from patchswap.models import create_model, load_pretrained

N, C, H, W, CLASSES = 8, 3, 4, 4, 5

pytestmark = pytest.mark.usefixtures("single_thread")


def Recorder() -> RecordingLinear:  # noqa: N802 - reads like the class it builds
    """A linear classifier of this module's sizes that keeps a copy of every input it sees."""
    return RecordingLinear(C * H * W, CLASSES)


def _batch(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, H, W, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL(softmax(teacher / t) || softmax(student / t)), mean over rows, by torch's own kl_div."""
    return F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        log_target=True,
        reduction="batchmean",
    )


def test_all_baselines_are_registered_and_only_pair_methods_need_pairs():
    names = {"label_smoothing", "cutout", "mixup", "cutmix", "cskd", "pskd", "tfkd", "dlb", "kd"}
    assert names <= set(available_methods())
    assert {n for n in available_methods() if method_class(n).needs_pairs} == {"ips", "cskd"}


# -- label smoothing -------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", [None, 0.3])
def test_label_smoothing_is_ce_against_smoothed_one_hot(smoothing):
    x, y = _batch()
    model = Recorder()
    method = create_method("label_smoothing", **({} if smoothing is None else {"smoothing": smoothing}))
    out = method(model, MethodBatch(x, y))
    s = 0.1 if smoothing is None else smoothing
    target = (1 - s) * F.one_hot(y, CLASSES).float() + s / CLASSES
    torch.testing.assert_close(out.loss, _soft_ce(model.fc(x.flatten(1)), target), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="smoothing"):
        create_method("label_smoothing", smoothing=1.0)


# -- CS-KD -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("temperature", "lam"), [(4.0, 1.0), (2.0, 0.5)])
def test_cskd_is_anchor_ce_plus_kl_from_the_detached_partner(temperature, lam):
    x, y = _batch()
    y = torch.cat([y[: N // 2], y[: N // 2]])
    n = N // 2
    model = Recorder()
    out = create_method("cskd", temperature=temperature, lambda_cls=lam)(model, MethodBatch(x, y))
    assert [s.shape[0] for s in model.seen] == [n, n], "anchors with gradient, then partners without"
    out.loss.backward()
    got = model.fc.weight.grad.clone()
    model.zero_grad()
    z = model.fc(x.flatten(1))
    za, zp = z[:n], z[n:].detach()
    expected = F.cross_entropy(za, y[:n]) + lam * temperature**2 * _kl(za, zp, temperature)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    expected.backward()
    torch.testing.assert_close(got, model.fc.weight.grad, rtol=1e-4, atol=1e-7)
    assert torch.equal(out.targets, y[:n]) and out.logits.shape == (n, CLASSES)
    assert create_method("cskd").sampler_options(64) == {"partner": "same_class"}


# -- PS-KD -----------------------------------------------------------------------------------------
def _pskd(num_samples: int = 20, **options) -> nn.Module:
    return create_method("pskd", num_samples=num_samples, num_classes=CLASSES, **options)


def test_pskd_buffer_is_float16_per_sample_and_in_the_state_dict():
    method = _pskd(20)
    assert method.predictions.shape == (20, CLASSES) and method.predictions.dtype == torch.float16
    state = method.state_dict()
    assert {"predictions", "written_epoch"} <= set(state)
    with pytest.raises(ValueError, match="num_samples"):
        create_method("pskd")


def test_pskd_epoch_zero_is_one_hot_then_later_epochs_mix_in_the_stored_predictions():
    method, model = _pskd(20), Recorder()
    x, y = _batch()
    index = torch.arange(3, 3 + N)
    out0 = method(model, MethodBatch(x, y, index=index, epoch=0, max_epochs=5))
    z0 = model.fc(x.flatten(1)).detach()
    torch.testing.assert_close(out0.loss, F.cross_entropy(z0, y), rtol=1e-5, atol=1e-6)
    stored = method.predictions[index].float()
    torch.testing.assert_close(stored, z0.softmax(dim=1), atol=1e-3, rtol=0)
    assert (method.predictions[:3] == 0).all() and (method.written_epoch[index] == 0).all()

    # A later visit within epoch 0 still uses one-hot targets: this epoch's predictions are for the next.
    with torch.no_grad():
        model.fc.weight.mul_(1.5)
    again = method(model, MethodBatch(x, y, index=index, epoch=0, max_epochs=5))
    z0b = model.fc(x.flatten(1)).detach()
    torch.testing.assert_close(again.loss, F.cross_entropy(z0b, y), rtol=1e-5, atol=1e-6)

    # Epoch 2 (the paper's t = 3): alpha_t = 0.8 * 3 / 5, mixed with the predictions of the last visit.
    prev = method.predictions[index].float()
    out2 = method(model, MethodBatch(x, y, index=index, epoch=2, max_epochs=5))
    alpha = 0.8 * 3 / 5
    target = (1 - alpha) * F.one_hot(y, CLASSES) + alpha * prev / prev.sum(dim=1, keepdim=True)
    torch.testing.assert_close(out2.loss, _soft_ce(model.fc(x.flatten(1)), target), rtol=1e-5, atol=1e-6)
    assert out2.parts["alpha_t"].item() == pytest.approx(alpha)
    assert (method.written_epoch[index] == 2).all()


def test_pskd_state_survives_a_state_dict_round_trip():
    method, model = _pskd(12), Recorder()
    x, y = _batch()
    index = torch.arange(N)
    method(model, MethodBatch(x, y, index=index, epoch=0, max_epochs=3))
    restored = _pskd(12)
    restored.load_state_dict(method.state_dict())
    a = method(model, MethodBatch(x, y, index=index, epoch=1, max_epochs=3)).loss
    b = restored(model, MethodBatch(x, y, index=index, epoch=1, max_epochs=3)).loss
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, F.cross_entropy(model.fc(x.flatten(1)), y))


def _ranks_step(methods, model, batches, epoch, max_epochs=4):
    for method, (x, y, index) in zip(methods, batches, strict=True):
        method(model, MethodBatch(x, y, index=torch.tensor(index), epoch=epoch, max_epochs=max_epochs))


def _state(method) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in method.state_dict().items()}


def test_pskd_rank_states_give_every_rank_back_exactly_its_own_buffers(monkeypatch):
    """Two ranks in one process: a checkpoint holds rank 0's buffers and both ranks' rank_state; each
    resumed rank must hold exactly what it held at the save, and go on exactly as it would have. Row 3
    is in both ranks' shards (the sampler's padding), written by rank 0 before the save only."""
    import patchswap.methods.pskd as pskd_module

    monkeypatch.setattr(pskd_module, "_distributed", lambda: True)
    model = Recorder()
    x, y = _batch()
    ranks = [_pskd(10), _pskd(10)]
    _ranks_step(ranks, model, [(x[:4], y[:4], [0, 1, 2, 3]), (x[4:], y[4:], [4, 5, 6, 7])], epoch=0)
    for r in ranks:  # the end of epoch 0 as the all-reduce leaves it: every rank holds every row
        r.load_state_dict(_merged(ranks))
    _ranks_step(ranks, model, [(x[:2], y[:2], [0, 3]), (x[4:6], y[4:6], [4, 8])], epoch=1)
    saved_states = [r.rank_state() for r in ranks]
    checkpoint = _state(ranks[0])
    before = [_state(r) for r in ranks]
    assert not torch.equal(before[0]["predictions"], before[1]["predictions"])

    resumed = [_pskd(10), _pskd(10)]
    for rank, r in enumerate(resumed):
        r.load_state_dict(checkpoint)
        r.load_rank_states(saved_states, rank, torch.device("cpu"))
    for rank in range(2):
        for key in ("predictions", "written_epoch"):
            assert torch.equal(_state(resumed[rank])[key], before[rank][key]), (rank, key)
    # Both go on alike: rank 1 now reads row 3 (as of epoch 0: rank 0's epoch-1 write is not its own),
    # and a second save inside the epoch still describes the epoch's start.
    rest = [(x[2:4], y[2:4], [1, 2]), (x[6:], y[6:], [3, 9])]
    _ranks_step(ranks, model, rest, epoch=1)
    _ranks_step(resumed, model, rest, epoch=1)
    for a, b in zip(ranks, resumed, strict=True):
        assert all(torch.equal(v, _state(b)[k]) for k, v in _state(a).items())
        sa, sb = a.rank_state(), b.rank_state()
        order_a, order_b = sa["rows"].argsort(stable=True), sb["rows"].argsort(stable=True)
        for key in ("rows", "new", "old", "old_stamps"):
            assert torch.equal(sa[key][order_a], sb[key][order_b]), key


def _merged(ranks) -> dict[str, torch.Tensor]:
    state = _state(ranks[0])
    other = _state(ranks[1])
    theirs = other["written_epoch"] >= 0
    state["predictions"][theirs] = other["predictions"][theirs]
    state["written_epoch"][theirs] = other["written_epoch"][theirs]
    return state


def test_single_process_methods_have_no_rank_state():
    method, model = _pskd(12), Recorder()
    x, y = _batch()
    method(model, MethodBatch(x, y, index=torch.arange(N), epoch=0, max_epochs=3))
    assert method.rank_state() is None
    assert create_method("cskd").rank_state() is None


@pytest.mark.parametrize("form", ["paper", "official"])
def test_dlb_rank_states_give_every_rank_back_its_own_kept_batch(form):
    model = Recorder()
    ranks = [create_method("dlb", form=form), create_method("dlb", form=form)]
    for seed, method in enumerate(ranks):
        x, y = _batch(seed=seed)
        method(model, MethodBatch(x, y, epoch=2, raw=x))
    saved_states = [m.rank_state() for m in ranks]
    resumed = [create_method("dlb", form=form), create_method("dlb", form=form)]
    x, y = _batch(seed=5)
    for rank, method in enumerate(resumed):
        method.load_state_dict(ranks[0].state_dict())  # what the checkpoint holds: rank 0's
        method.load_rank_states(saved_states, rank, torch.device("cpu"))
        want = ranks[rank](model, MethodBatch(x, y, epoch=2, raw=x)).loss
        torch.testing.assert_close(method(model, MethodBatch(x, y, epoch=2, raw=x)).loss, want)
    assert not torch.equal(
        saved_states[0]["kept" if form == "paper" else "memory"][0],
        saved_states[1]["kept" if form == "paper" else "memory"][0],
    )


def test_pskd_rejects_missing_or_out_of_range_indices():
    x, y = _batch()
    with pytest.raises(ValueError, match="index"):
        _pskd(20)(Recorder(), MethodBatch(x, y))
    with pytest.raises(ValueError, match="indices"):
        _pskd(4)(Recorder(), MethodBatch(x, y, index=torch.arange(N)))


# -- Tf-KD -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "alpha", "t"), [(0.9, 0.1, 20.0), (0.6, 0.5, 2.0)])
def test_tfkd_distils_from_the_virtual_teacher(a, alpha, t):
    x, y = _batch()
    model = Recorder()
    out = create_method("tfkd", a=a, alpha=alpha, temperature=t)(model, MethodBatch(x, y))
    z = model.fc(x.flatten(1))
    one_hot = F.one_hot(y, CLASSES).float()
    p_d = a * one_hot + (1 - a) / (CLASSES - 1) * (1 - one_hot)
    teacher = p_d ** (1 / t) / (p_d ** (1 / t)).sum(dim=1, keepdim=True)  # softmax(log p^d / T)
    kl = (teacher * (teacher.log() - F.log_softmax(z / t, dim=1))).sum(dim=1).mean()
    expected = (1 - alpha) * F.cross_entropy(z, y) + alpha * t * t * kl
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="a must be"):
        create_method("tfkd", a=1.0)


@pytest.mark.parametrize(
    ("options", "a", "multiplier"), [({}, 0.99, 100.0), ({"a": 0.9, "multiplier": 3.0}, 0.9, 3.0)]
)
def test_tfkd_official_form_is_the_authors_loss(options, a, multiplier):
    """The authors' code: teacher softmax(p^d / T), student logits unscaled, KLDivLoss mean over N * K."""
    x, y = _batch()
    model = Recorder()
    out = create_method("tfkd", form="official", **options)(model, MethodBatch(x, y))
    z = model.fc(x.flatten(1))
    one_hot = F.one_hot(y, CLASSES).float()
    p_d = a * one_hot + (1 - a) / (CLASSES - 1) * (1 - one_hot)
    teacher = (p_d / 20).exp() / (p_d / 20).exp().sum(dim=1, keepdim=True)  # softmax(p^d / T), T = 20
    kl = F.kl_div(F.log_softmax(z, dim=1), teacher, reduction="sum") / (N * CLASSES)
    expected = 0.9 * F.cross_entropy(z, y) + 0.1 * multiplier * kl
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.parts["kd"], multiplier * kl, rtol=1e-5, atol=1e-6)
    # By hand, row 0: the teacher is nearly uniform at T = 20 (true class e^{a/T} against e^{(1-a)/(K-1)/T}).
    near = math.exp(a / 20) / (math.exp(a / 20) + (CLASSES - 1) * math.exp((1 - a) / (CLASSES - 1) / 20))
    assert teacher[0, y[0]].item() == pytest.approx(near, rel=1e-6) and 0.2 < near < 0.22
    with pytest.raises(ValueError, match="form"):
        create_method("tfkd", form="authors")


# -- DLB -------------------------------------------------------------------------------------------
def test_dlb_distils_the_kept_half_batch_from_its_last_step_predictions():
    method, model = create_method("dlb", temperature=3.0, alpha=0.7), Recorder()
    x1, y1 = _batch(seed=1)
    out1 = method(model, MethodBatch(x1, y1, epoch=0))
    z1 = model.fc(x1.flatten(1)).detach()
    torch.testing.assert_close(out1.loss, F.cross_entropy(z1, y1), rtol=1e-5, atol=1e-6)
    assert out1.parts["kd"].item() == 0.0

    with torch.no_grad():  # an optimizer step between the two batches
        model.fc.weight.add_(0.3 * torch.randn_like(model.fc.weight))
    x2, y2 = _batch(seed=2)
    out2 = method(model, MethodBatch(x2, y2, epoch=0))
    half = N // 2
    assert torch.equal(model.seen[1], torch.cat([x2, x1[half:]])), "1.5x images: batch + kept half"
    z_kept = model.fc(x1[half:].flatten(1))
    expected = F.cross_entropy(model.fc(x2.flatten(1)), y2) + 0.7 * 9 * _kl(z_kept, z1[half:], 3.0)
    torch.testing.assert_close(out2.loss, expected, rtol=1e-5, atol=1e-6)
    assert out2.parts["kd"].item() > 0 and out2.logits.shape == (N, CLASSES)

    # A new epoch starts with an empty memory.
    method(model, MethodBatch(x1, y1, epoch=1))
    assert model.seen[2].shape[0] == N
    # The kept half-batch is checkpointed with its epoch, so a run resumed inside an epoch continues exactly.
    state = method.state_dict()
    assert int(state["kept_half_epoch"]) == 1 and torch.equal(state["kept_half_images"], x1[half:])
    again = type(method)(method.options)
    again.load_state_dict(state)
    assert again._kept_epoch == 1 and torch.equal(again._kept[0], x1[half:])


def test_dlb_kept_half_batch_follows_the_step_to_the_device_after_a_resume():
    """Lightning loads a checkpoint on the CPU and moves the module afterwards; nn.Module.to moves
    buffers, not the kept batch. The resumed step must still use it ('meta' stands in for a GPU)."""
    method = create_method("dlb")
    x1, y1 = _batch(seed=1)
    method(Recorder(), MethodBatch(x1, y1, epoch=1))
    resumed = create_method("dlb")
    resumed.load_state_dict(method.state_dict())
    resumed.to("meta")  # (the loss's autocast has no meta kernels: the step's first part alone)
    kept = resumed._usable_kept(_batch(seed=2)[0].to("meta"), epoch=1)
    assert kept is not None, "the kept half-batch was dropped"
    assert kept[0].device.type == "meta" and kept[0].shape == (N // 2, C, H, W)
    assert resumed._usable_kept(_batch(seed=2)[0].to("meta"), epoch=2) is None  # a new epoch: none


def _second_view(raw: torch.Tensor) -> torch.Tensor:
    """A stand-in for the engine's augmentation: deterministic, so the second view is known by hand."""
    return raw.flip(3) * 2.0


def test_dlb_official_form_forwards_the_whole_last_batch_again_under_a_second_view():
    method, model = create_method("dlb", form="official", temperature=3.0, alpha=0.7), Recorder()
    raw1, y1 = _batch(seed=1)
    x1 = raw1 * 0.5  # the batch's own (first) view
    out1 = method(model, MethodBatch(x1, y1, epoch=0, raw=raw1, augment=_second_view))
    z1 = model.fc(x1.flatten(1)).detach()
    torch.testing.assert_close(out1.loss, F.cross_entropy(z1, y1), rtol=1e-5, atol=1e-6)
    assert out1.parts["kd"].item() == 0.0 and out1.images == N and len(model.seen) == 1

    with torch.no_grad():  # an optimizer step between the two batches
        model.fc.weight.add_(0.3 * torch.randn_like(model.fc.weight))
    raw2, y2 = _batch(seed=2)
    x2 = raw2 * 0.5
    # A new epoch: the memory is carried over.
    out2 = method(model, MethodBatch(x2, y2, epoch=1, raw=raw2, augment=_second_view))
    assert torch.equal(model.seen[1], x2), "the current batch first"
    assert torch.equal(model.seen[2], raw1.flip(3) * 2.0), "then the whole last batch, re-augmented, alone"
    z_prev = model.fc((raw1.flip(3) * 2.0).flatten(1))
    z2 = model.fc(x2.flatten(1))
    ce = (F.cross_entropy(z_prev, y1) + F.cross_entropy(z2, y2)) / 2  # CE over both batches (equal sizes)
    expected = ce + 0.7 * 9 * _kl(z_prev, z1, 3.0)
    torch.testing.assert_close(out2.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out2.parts["ce"], ce, rtol=1e-5, atol=1e-6)
    assert out2.images == 2 * N and out2.logits.shape == (N, CLASSES) and torch.equal(out2.targets, y2)

    # The memory (raw images, labels, logits) is in the state dict: a restored method continues exactly.
    state = method.state_dict()
    assert set(state) == {"kept_images", "kept_labels", "kept_logits"}
    assert torch.equal(state["kept_images"], raw2) and torch.equal(state["kept_labels"], y2)
    restored = create_method("dlb", form="official", temperature=3.0, alpha=0.7)
    restored.load_state_dict(state)
    raw3, y3 = _batch(n=3, seed=3)  # a smaller (last) batch
    batch3 = MethodBatch(raw3 * 0.5, y3, epoch=1, raw=raw3, augment=_second_view)
    torch.testing.assert_close(restored(model, batch3).loss, method(model, batch3).loss)
    with pytest.raises(RuntimeError, match="kept_images"):
        create_method("dlb").load_state_dict(state)
    with pytest.raises(ValueError, match="form"):
        create_method("dlb", form="authors")


def test_dlb_official_form_without_raw_images_forwards_the_last_batch_as_it_was():
    method, model = create_method("dlb", form="official"), Recorder()
    x1, y1 = _batch(seed=1)
    x2, y2 = _batch(seed=2)
    method(model, MethodBatch(x1, y1))
    z1 = model.fc(x1.flatten(1)).detach()
    out = method(model, MethodBatch(x2, y2))
    assert torch.equal(model.seen[2], x1)
    z_prev = model.fc(x1.flatten(1))
    ce = F.cross_entropy(torch.cat([z_prev, model.fc(x2.flatten(1))]), torch.cat([y1, y2]))
    torch.testing.assert_close(out.loss, ce + 9 * _kl(z_prev, z1, 3.0), rtol=1e-5, atol=1e-6)


# -- KD --------------------------------------------------------------------------------------------
BASE = ["--data.train_subset", "300", "--data.batch_size", "32", "--trainer.progress_bar", "false"]
BASE += ["--model", "resnet8", "--epochs", "1"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher") / "run"
    assert main(["train", "--method", "ce", *BASE, "--run-dir", str(run_dir)]) == 0
    return run_dir


def _digits_batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_kd_loads_the_teacher_of_a_run_and_distils_it(teacher_run):
    method = create_method("kd", teacher=str(teacher_run), num_classes=10, temperature=4.0, alpha=0.9)
    student = create_model("resnet8", 10, in_chans=1)
    x, y = _digits_batch()
    out = method(student, MethodBatch(x, y))

    reference = create_model("resnet8", 10, in_chans=1)
    load_pretrained(reference, teacher_run / "checkpoints" / "best.ckpt")
    reference.eval()
    with torch.no_grad():
        zt = reference(x)
    zs = out.logits
    expected = 0.1 * F.cross_entropy(zs, y) + 0.9 * 16 * _kl(zs, zt, 4.0)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)

    teacher = method.teacher_model()
    method.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert not method.state_dict() and not list(method.parameters()), "the teacher is not a submodule"
    # A checkpoint file works as well as the run directory.
    by_file = create_method("kd", teacher=str(teacher_run / "checkpoints" / "last.ckpt"), num_classes=10)
    torch.testing.assert_close(by_file(student, MethodBatch(x, y)).loss, out.loss)


def test_kd_errors_clearly_on_a_missing_teacher_or_another_class_count(teacher_run, tmp_path):
    with pytest.raises(ValueError, match="needs a teacher"):
        create_method("kd", num_classes=10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_method("kd", teacher=str(tmp_path / "nope"), num_classes=10).teacher_model()
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        create_method("kd", teacher=str(tmp_path), num_classes=10).teacher_model()
    x, y = _digits_batch()
    with pytest.raises(ValueError, match="predicts 10 classes but the student 5"):
        create_method("kd", teacher=str(teacher_run), num_classes=5)(
            create_model("resnet8", 5, in_chans=1), MethodBatch(x, y % 5)
        )
    plain = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(1)}}, plain)
    with pytest.raises(ValueError, match="no patchswap config"):
        create_method("kd", teacher=str(plain), num_classes=10).teacher_model()


def test_a_kd_run_with_a_mismatched_teacher_fails_before_training(teacher_run, tmp_path, monkeypatch, capsys):
    import numpy as np

    from patchswap.engine.module import ClassifierModule

    def no_step(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(ClassifierModule, "training_step", no_step)
    run_dir = tmp_path / "r"
    argv = ["train", "--method", "kd", "--kd.teacher", str(teacher_run), *BASE, "--run-dir", str(run_dir)]
    argv += ["--data.name", "npz:" + str(tmp_path / "five.npz")]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "five.npz", x=rng.integers(0, 255, (400, 8, 8), dtype=np.uint8), y=np.arange(400) % 5)
    assert main(argv) == 2
    assert "predicts 10 classes but the student 5" in capsys.readouterr().err
    assert not (run_dir / "checkpoints").exists()


# -- end to end --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("kd", None),
        ("pskd", []),
        ("dlb", []),
        ("dlb", ["--dlb.form", "official"]),
        ("tfkd", ["--tfkd.form", "official"]),
        ("cskd", []),
        ("cutmix", []),
        ("ips", ["--ips.mix", "mixup"]),
    ],
)
def test_baselines_train_end_to_end(method, extra, teacher_run, tmp_path):
    if extra is None:
        extra = ["--kd.teacher", str(teacher_run)]
    run_dir = tmp_path / "r"
    assert main(["train", "--method", method, *BASE, *extra, "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == method
    acc = summary["test"]["acc"]
    assert isinstance(acc, float) and math.isfinite(acc) and 0.0 <= acc <= 1.0
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    assert all(k.startswith(("model.", "method.")) for k in state), "nothing else (no kd teacher) is saved"
    if method == "kd":
        assert "train/teacher_acc" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    if method == "pskd":
        assert state["method.predictions"].shape == (300, 10)
        assert state["method.predictions"].dtype == torch.float16
        assert (state["method.written_epoch"] == 0).sum() >= 288  # all but the drop_last remainder
    if extra == ["--dlb.form", "official"]:
        assert state["method.kept_images"].dtype == torch.uint8, "the raw images, kept for a fresh view"
        assert (
            state["method.kept_images"].shape[1:] == (1, 8, 8) and state["method.kept_logits"].shape[1] == 10
        )
