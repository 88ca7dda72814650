"""Device names as users and configs give them, read one way by every command."""

import pytest
import torch

from patchswap.devices import resolve_device


def test_auto_takes_the_best_device_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("AUTO") == torch.device("cuda")


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("gpu", torch.device("cuda")),
        ("cuda:1", torch.device("cuda", 1)),
        ("cpu", torch.device("cpu")),
        (torch.device("cuda", 2), torch.device("cuda", 2)),
        ("mps", torch.device("mps")),
    ],
)
def test_lightning_accelerator_names_and_torch_devices(name, want):
    assert resolve_device(name) == want


def test_an_unknown_name_says_which_are_known():
    with pytest.raises(ValueError, match=r"unknown device 'tpu9'.*auto, cpu, cuda"):
        resolve_device("tpu9")
