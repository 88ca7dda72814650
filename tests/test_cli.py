"""The command line: --help documents every key, errors exit 2 with the valid names, show-pairs, eval."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from patchswap.cli import main
from patchswap.cli.commands import COMMANDS
from patchswap.cli.flags import ALIASES, field_help
from patchswap.engine.config import SECTIONS, RunConfig
from patchswap.methods import available_methods

pytestmark = pytest.mark.usefixtures("single_thread")


def _help(capsys, monkeypatch, *argv: str) -> str:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _all_keys() -> list[tuple[str, str, object]]:
    """(section, key, default) of every config key, method sections included."""
    cfg = RunConfig()
    sections = {**{n: getattr(cfg, n) for n in SECTIONS}, **cfg.methods}
    return [(s, f.name, getattr(obj, f.name)) for s, obj in sections.items() for f in dataclasses.fields(obj)]


# -- help --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "show-pairs"])
def test_help_shows_every_key_with_its_default(capsys, monkeypatch, command):
    text = " ".join(_help(capsys, monkeypatch, command).split())  # undo argparse's line wrapping
    body = text[text.index("--method.name NAME training method") :]  # past the short aliases
    flags = [f"--{s}.{k}" for s, k, _ in _all_keys()]
    starts = [body.index(f" {flag} ") for flag in flags]
    assert starts == sorted(starts), "flags are listed section by section, in field order"
    ends = [*starts[1:], len(body)]
    for (section, key, default), start, end in zip(_all_keys(), starts, ends, strict=True):
        entry = body[start:end]
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        assert f"(default: {shown})" in entry, (section, key, entry)
    assert body.startswith(
        f"--method.name NAME training method: {', '.join(available_methods())} (default: ips)"
    )
    for flag, key in ALIASES.items():
        assert re.search(rf" {flag}( V)? += --{re.escape(key)}\b", text), flag


def test_help_carries_thefield_help(capsys, monkeypatch):
    """The help in a config field's metadata is its --help text."""
    from patchswap.methods import method_class

    full = " ".join(_help(capsys, monkeypatch, "train").split())
    text = full[full.index("--method.name NAME training method") :]  # past the short aliases
    classes = {**SECTIONS, "ce": method_class("ce").Options, "ips": method_class("ips").Options}
    documented = 0
    for section, cls in classes.items():
        for key, comment in field_help(cls).items():
            entry = text.split(f" --{section}.{key} ", 1)[1].split(" ", 1)[1]  # after the metavar
            expected = " ".join(comment.split()) + " (default: "
            assert entry.startswith(expected), (section, key, entry[:100])
            documented += 1
    assert documented >= 30
    assert "--ips.prob float probability that a pair swaps (default: 0.5)" in text
    assert "--resume RUN_DIR continue a killed or finished run" in full


def test_help_explains_short_forms_models_and_keys(capsys, monkeypatch):
    """Issue 18: short forms say what they set, models are listed, every key has a description."""
    from patchswap.models import available_models

    text = " ".join(_help(capsys, monkeypatch, "train").split())
    methods = ", ".join(available_methods())
    assert f"--method V = --method.name: training method: {methods} (default: ips)" in text
    assert "--epochs V = --trainer.epochs: training epochs (default: 30)" in text
    assert "--download = --data.download true: let torchvision download" in text
    entry = text.split("--model.name str ", 1)[1].split("--model.pretrained", 1)[0]
    assert "timm:NAME or torchvision:NAME" in entry
    for name in available_models():
        if ":" not in name:
            assert name in entry, name
    assert "--optim.lr float learning rate" in text and "--trainer.epochs int training epochs" in text
    assert not re.search(r"--[\w.]+ \S+ \(default:", text), "a key without a description"
    assert ".:" not in text, "a heading ends in '.:'"
    assert "method 'ips' options - Intra-class Patch Swap" in text


def test_transfer_help_documents_every_key(capsys, monkeypatch):
    from patchswap.engine.transfer_config import TransferConfig

    text = " ".join(_help(capsys, monkeypatch, "transfer").split())
    assert "--task NAME dense task: segment, detect (default: segment)" in text
    for section, (obj, _) in TransferConfig().flag_sections().items():
        for f in dataclasses.fields(obj):
            assert f"--{section}.{f.name} " in text, (section, f.name)
    assert not re.search(r"--[\w.]+ \S+ \(default:", text), "a key without a description"
    assert ".:" not in text


# -- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (
            ["--data", "nosuchdata"],
            ["'nosuchdata'", "digits", "cifar10", "cifar100", "npz:PATH", "folder:PATH"],
        ),
        (["--model", "nosuchnet"], ["'nosuchnet'", "resnet8", "wrn_40_2", "timm:", "torchvision:"]),
        (["--method", "nosuch"], ["'nosuch'", "valid methods: ce, cskd, cutmix"]),
    ],
)
def test_unknown_names_exit_2_listing_valid_ones(capsys, tmp_path, flags, names):
    code = main(["train", *flags, "--run-dir", str(tmp_path / "r"), "--trainer.progress_bar", "false"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("patchswap train: error: ")
    for name in names:
        assert name in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_one_class_data_says_a_classifier_needs_two(capsys, tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, x=np.zeros((40, 8, 8), dtype=np.uint8), y=np.zeros(40, dtype=np.int64))
    argv = [
        "train",
        "--data",
        f"npz:{path}",
        "--run-dir",
        str(tmp_path / "r"),
        "--trainer.progress_bar",
        "false",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "a classifier needs at least two classes" in err and "num_classes" not in err
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("method", "k", "most"),  # ips pairs inside the batch: groups of K images of a class (0: K = 2)
    [("ce", 0, 21), ("ips", 0, 20), ("ips", 4, 20), ("ips", 8, 16)],
)
def test_batch_larger_than_the_training_set_names_the_cli_key(capsys, tmp_path, tiny_argv, method, k, most):
    extra = {"ips__samples_per_class": str(k)} if method == "ips" else {}
    argv = tiny_argv(tmp_path / "r", method=method, data__train_subset="21", data__batch_size="64", **extra)
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert "data.batch_size=64 is larger than the 21 training images" in err
    assert f"lower data.batch_size to at most {most}" in err
    assert "pairs_per_batch" not in err and "drop_last" not in err


def test_a_model_that_rejects_the_image_size_names_the_option(capsys, tmp_path):
    """Issue 18: timm's bare AssertionError at the first step becomes a start-up error that says
    --model.kwargs img_size=...; with it the model builds and takes the data."""
    from patchswap.engine.config import load_config
    from patchswap.engine.training import ClassificationRun

    argv = ["train", "--model", "timm:vit_tiny_patch16_224", "--run-dir", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not accept the data's 1x8x8 images" in err and "--model.kwargs img_size=8" in err
    assert not (tmp_path / "r" / "checkpoints").exists()
    kwargs = "img_size=8,patch_size=4,drop_path_rate=0.1,depth=2"
    cfg = load_config(None, {"model.name": "timm:vit_tiny_patch16_224", "model.kwargs": kwargs})
    run = ClassificationRun(cfg)
    assert run.model.patch_embed.patch_size == (4, 4) and len(run.model.blocks) == 2
    assert run.model.training, "the check leaves the model in training mode"


def test_yaml_typo_exits_2_with_a_suggestion(capsys, tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optim: {lrr: 0.1}\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'optim.lr'" in err and str(path) in err


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--trainer.epochs", "abc"], "trainer.epochs must be an integer, got 'abc'"),
        (["--trainer.progress_bar", "maybe"], "trainer.progress_bar must be true or false"),
        (["--optim.schedule", "multistep"], "--optim.milestones 150,180,210"),
    ],
)
def test_bad_flag_values_exit_2(capsys, flags, needle):
    assert main(["train", *flags]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("command", ["compare", "eval"])
def test_a_config_key_given_as_a_flag_where_set_is_the_way_says_so(capsys, command):
    with pytest.raises(SystemExit) as e:
        main([command, "x", "--data.image_size", "16"])
    assert e.value.code == 2
    assert "(did you mean '--set data.image_size=VALUE'?)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--optim.lrr", "0.1"], "--optim.lrr 0.1 (did you mean '--optim.lr'?)"),
        (["transfer", "--epoch", "1"], "--epoch 1 (did you mean '--epochs'?)"),
        (["show-pairs", "--ips.gird", "4"], "--ips.gird 4 (did you mean '--ips.grid'?)"),
    ],
)
def test_mistyped_flag_suggests_the_closest_like_a_yaml_key(capsys, argv, needle):
    """Issue 18: a mistyped flag gets its command's did-you-mean, not the top-level usage."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"patchswap {argv[0]}: error: unrecognized arguments: {needle.split(' (')[0]}" in err
    assert needle in err
    assert f"usage: patchswap {argv[0]} [options] (see patchswap {argv[0]} --help)" in err
    assert len(err.splitlines()) == 2, "a one-line usage, not every config key"


def test_short_forms_exist_wherever_their_key_does(capsys, monkeypatch):
    """Issue 18: transfer and show-pairs take the short forms of the keys they have; compare's quick
    form takes those every run shares."""
    transfer = " ".join(_help(capsys, monkeypatch, "transfer").split())
    for flag in ("--epochs", "--data", "--seed", "--lr", "--batch-size", "--run-dir"):
        assert f" {flag} " in transfer, flag
    assert " --model V " not in transfer and " --val-split " not in transfer  # no such transfer keys
    pairs = " ".join(_help(capsys, monkeypatch, "show-pairs").split())
    assert all(f" {flag} " in pairs for flag in ("--data", "--model", "--seed", "--epochs"))
    compare = " ".join(_help(capsys, monkeypatch, "compare").split())
    assert "--epochs V = --trainer.epochs" in compare and "--data V = --data.name" in compare
    assert " --seed V " not in compare and " --run-dir " not in compare  # --seeds and --out say those


def test_compare_short_forms_feed_the_quick_form(monkeypatch, tmp_path):
    import patchswap.study.compare as compare

    seen = {}

    def fake_quick(configs, methods, seeds, out, common):
        seen.update(common)
        raise SystemExit(0)

    monkeypatch.setattr(compare, "quick_study", fake_quick)
    with pytest.raises(SystemExit):
        main(["compare", "--methods", "ce", "--epochs", "2", "--data", "digits", "--set", "optim.lr=0.1"])
    assert seen == {"trainer.epochs": "2", "data.name": "digits", "optim.lr": "0.1"}
    with pytest.raises(SystemExit, match="apply to the quick form"):
        main(["compare", str(tmp_path / "study.yaml"), "--epochs", "2"])


# -- show-pairs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("pairs", "scale", "cell"), [(8, 0, 96), (5, 3, 24)])
def test_show_pairs_writes_four_rows_of_swapped_pairs(capsys, tmp_path, pairs, scale, cell):
    out = tmp_path / "figs" / "pairs.png"
    argv = ["show-pairs", "--out", str(out), "--pairs", str(pairs), "--ips.prob", "1.0"]
    assert main([*argv, "--scale", str(scale)] if scale else argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "swapped share of each pair" in printed

    image = np.asarray(Image.open(out).convert("RGB"))
    from patchswap.engine.config import load_config
    from patchswap.engine.show_pairs import draw_pairs

    # The geometry of the same picture: tiles below a band of class names, right of the row labels.
    pic = draw_pairs(load_config(None, {"ips.prob": "1.0"}), pairs=pairs, out=tmp_path / "b.png", scale=scale)
    assert np.array_equal(image, np.asarray(Image.open(pic.path).convert("RGB")))
    assert pic.tile == cell and pic.origin[0] > 8 and pic.origin[1] > 40, "room for classes and labels"
    pad = 2
    assert image.shape == (
        pic.origin[0] + 4 * (cell + pad) + pad,
        pic.origin[1] + pairs * (cell + pad) + pad,
        3,
    )
    tiles = [
        [image[slice(*pic.tile_box(r, c)[::2]), slice(*pic.tile_box(r, c)[1::2]), 0] for c in range(pairs)]
        for r in range(4)
    ]
    for c in range(pairs):
        anchor, partner, swapped_a, swapped_b = (tiles[r][c].astype(int) for r in range(4))
        # Every pixel of a swapped view comes from one of the two originals, and the views complement.
        assert ((swapped_a == anchor) | (swapped_a == partner)).all()
        assert (swapped_a + swapped_b == anchor + partner).all()
    # prob=1: every pair exchanged something visible (digits pairs differ somewhere in a swapped cell).
    assert any((tiles[2][c] != tiles[0][c]).any() for c in range(pairs))
    # The labels and the classes are drawn: dark text in the left margin of each row and above each column.
    for r in range(4):
        top, _, bottom, _ = pic.tile_box(r, 0)
        assert (image[top:bottom, : pic.origin[1], 0] < 128).any(), f"row {r} has no label"
    for c in range(pairs):
        _, left, _, right = pic.tile_box(0, c)
        assert (image[: pic.origin[0], left:right, 0] < 128).any(), f"column {c} has no class"
    assert "labelled in the picture" in printed


def test_show_pairs_is_seeded(capsys, tmp_path):
    for name in ("a", "b"):
        assert main(["show-pairs", "--out", str(tmp_path / f"{name}.png"), "--seed", "3"]) == 0
    assert main(["show-pairs", "--out", str(tmp_path / "c.png"), "--seed", "4"]) == 0
    capsys.readouterr()
    a, b, c = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# -- train / eval / resume through the CLI -------------------------------------------------------------
def test_eval_prints_json_with_the_test_accuracy(capsys, tiny_run):
    run_dir, summary = tiny_run
    assert main(["eval", str(run_dir)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["split"] == "test" and res["images"] > 0
    assert res["acc"] == pytest.approx(summary["test"]["acc"], abs=1e-7)
    assert {"nll", "ece", "checkpoint"} <= set(res)
    assert main(["eval", str(run_dir), "--split", "val"]) == 0
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(summary["val"]["acc"], abs=1e-7)


def test_eval_errors(capsys, tiny_run, tmp_path):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "neither a run directory nor a checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["eval", str(tiny_run[0]), "--set", "data.data_dir"])


def test_eval_refuses_overrides_that_recut_the_splits(capsys, tiny_run):
    """Issue 18: --set data.test_split=... would re-cut the run's splits (training images in test)."""
    for key, value in (("data.test_split", "0.3"), ("data.split_seed", "1"), ("data.val_split", "0.2")):
        assert main(["eval", str(tiny_run[0]), "--set", f"{key}={value}"]) == 2
        err = capsys.readouterr().err
        assert f"{key} cannot change when evaluating" in err and "--set data.name=NAME" in err
    # The saved value itself is no change; other keys still apply.
    same = ["--set", "data.split_seed=0", "--set", "data.eval_batch_size=7"]
    assert main(["eval", str(tiny_run[0]), *same]) == 0
    capsys.readouterr()


def test_eval_without_a_test_split_says_what_to_do(capsys, tiny_run, tmp_path):
    """Another dataset (data.name may change) that has no test split of its own."""
    rng = np.random.default_rng(0)
    path = tmp_path / "only-train.npz"
    np.savez(path, x=rng.integers(0, 255, (60, 8, 8), dtype=np.uint8), y=np.arange(60) % 10)
    assert main(["eval", str(tiny_run[0]), "--set", f"data.name=npz:{path}"]) == 2
    err = capsys.readouterr().err
    assert "has no test split" in err
    assert "--split val" in err and "--set data.name=NAME" in err
    assert "pass --data.test_split" not in err


def test_eval_of_a_run_with_neither_split_does_not_send_the_user_in_a_circle(capsys, tmp_path, tiny_argv):
    rng = np.random.default_rng(0)
    path = tmp_path / "only-train.npz"
    np.savez(path, x=rng.integers(0, 255, (80, 8, 8), dtype=np.uint8), y=np.arange(80) % 4)
    run_dir = tmp_path / "r"
    argv = tiny_argv(run_dir, method="ce", data__name=f"npz:{path}", data__val_split="0", trainer__epochs="1")
    assert main(["train", *argv]) == 0
    capsys.readouterr()
    for split in ("test", "val"):
        assert main(["eval", str(run_dir), "--split", split]) == 2
        err = capsys.readouterr().err
        assert "has neither a validation nor a test split" in err and "--split" not in err


def test_train_ce_through_the_cli(capsys, tmp_path, tiny_argv):
    run_dir = tmp_path / "ce"
    assert main(["train", *tiny_argv(run_dir, trainer__epochs="1", method="ce")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"method\s+ce \| model resnet8 \| seed 0", out)
    assert re.search(r"test\s+acc \d+\.\d\d%", out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "ce" and summary["epochs_run"] == 1
    # Plain CE logs no swap statistics.
    assert "train/swap_fraction" not in (run_dir / "metrics.csv").read_text()
    # A second train into the same directory is refused, pointing at --resume.
    assert main(["train", *tiny_argv(run_dir, trainer__epochs="1", method="ce")]) == 2
    assert f"patchswap train --resume {run_dir}" in capsys.readouterr().err


def test_resume_errors_through_the_cli(capsys, tmp_path, tiny_run):
    assert main(["train", "--resume", str(tiny_run[0]), "--config", "x.yaml"]) == 2
    assert "patchswap train: error: --resume uses the config saved" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--resume", str(empty)]) == 2
    assert "not a run directory" in capsys.readouterr().err

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run[0], broken)
    (broken / "checkpoints" / "last.ckpt").write_bytes(b"\x80\x02truncated")
    assert main(["train", "--resume", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and "last.ckpt" in err

    (broken / "checkpoints" / "last.ckpt").unlink()
    assert main(["train", "--resume", str(broken)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_warnings_are_one_line_while_a_command_runs_and_restored_after(monkeypatch):
    import warnings

    from patchswap.cli import _warning_line

    ours = _warning_line(UserWarning("loaded 54/56 tensors"), UserWarning, "registry.py", 119, "code")
    assert ours == "warning: loaded 54/56 tensors\n"
    theirs = _warning_line(FutureWarning("x"), FutureWarning, "torch/a.py", 7, "code")
    assert theirs == "FutureWarning (torch/a.py:7): x\n"
    seen = []
    monkeypatch.setitem(COMMANDS, "eval", lambda args: seen.append(warnings.formatwarning) or 0)
    before = warnings.formatwarning
    assert main(["eval", "x"]) == 0
    assert seen == [_warning_line] and warnings.formatwarning is before
