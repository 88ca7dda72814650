"""The README's first-loop example runs as printed and is no longer than promised."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text.split("## Use IPS in your own training loop", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_and_trains():
    code = _example()
    assert len(code.strip().splitlines()) <= 15
    scope: dict = {}
    exec(compile(code, "README-example", "exec"), scope)
    out, model, x, y = scope["out"], scope["model"], scope["x"], scope["y"]
    assert out.loss.isfinite() and out.ce.item() > 0 and scope["epoch"] == 2
    # Three epochs on 512 random images: the linear model has started to fit its (random) labels.
    with torch.no_grad():
        train_acc = (model(x).argmax(1) == y).float().mean().item()
    assert train_acc > 0.2


def test_readme_starts_with_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert "patchswap train" in blocks[0] and "pytest" in blocks[1]
    for block in blocks[:2]:
        assert "torch==2.14.1 torchvision==0.29.1" in block
