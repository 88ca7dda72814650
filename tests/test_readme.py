"""The README's first-loop example runs as printed and is no longer than promised."""

import re
from pathlib import Path

import pytest
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


ROOT = README.parent
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-train-part1.npz"


def _finetune_commands() -> list[str]:
    section = README.read_text().split("## Fine-tune on your own images and ship the model", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section.split("\n## ", 1)[0], re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip()]


def test_finetune_section_goes_from_a_generated_folder_to_an_exported_model():
    commands = _finetune_commands()
    assert commands[0].startswith("python scripts/make_demo_folder.py demo")
    assert [c.split()[1] for c in commands[1:]] == ["train", "calibrate", "predict", "export"]
    train = commands[1]
    assert "--data folder:demo" in train and "--model.pretrained " in train
    pretrained = train.split("--model.pretrained ", 1)[1].split()[0]
    assert (ROOT / pretrained).is_file() and (ROOT / "scripts" / "make_demo_folder.py").is_file()


def _tiny(argv: list[str]) -> list[str]:
    """The README's command on tiny settings: a few images, two epochs, paths from the repository."""
    import sys

    if argv[0] == "python":  # the folder: 12 training + 4 test images per class
        return [sys.executable, str(ROOT / argv[1]), *argv[2:], "--npz", str(CIFAR)]
    argv = [sys.executable, "-m", "patchswap.cli", *argv[1:]]
    if argv[3] == "train":
        small = {"--epochs": "2", "--data.val_split": "10", "--data.batch_size": "16"}
        argv = [small.get(argv[i - 1], a) for i, a in enumerate(argv)]
        argv = [str(ROOT / a) if a.endswith(".safetensors") else a for a in argv]
        argv += ["--data.batch_size", "16", "--trainer.progress_bar", "false"]
    return argv


@pytest.mark.skipif(not CIFAR.exists(), reason="needs the CIFAR-10 npz of ../shared/data")
def test_finetune_section_runs_end_to_end_on_tiny_settings(tmp_path):
    import os
    import shlex
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)  # the load's report line is a warning the test reads
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    outputs = []
    for command in _finetune_commands():
        argv = _tiny(shlex.split(command))
        if "make_demo_folder.py" in argv[1]:
            argv += ["--train-per-class", "12", "--test-per-class", "4"]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout + done.stderr)
    assert "classifier tensor(s) re-initialised (model.reset_classifier)" in outputs[1]
    assert (tmp_path / "runs/demo-ips/summary.json").is_file()
    assert (tmp_path / "runs/demo-ips/calibration.json").is_file()
    assert len((tmp_path / "preds.csv").read_text().strip().splitlines()) == 1 + 4  # header + 4 ships
    assert (tmp_path / "runs/demo-ips/export/model.onnx").is_file()
