"""predict: files and folders through the run's eval transform; bad files are rows, not crashes."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from patchswap.cli import main
from patchswap.deploy import find_images, format_predictions, predict, write_predictions


@pytest.fixture(scope="module")
def image_files(loaded_run, tmp_path_factory):
    """Five test-split digits as native 8x8 PNGs (and their tensors), a corrupt and a truncated JPEG,
    a text file, and a folder holding images plus a file without an image extension."""
    root = tmp_path_factory.mktemp("images")
    test = loaded_run.bundle.test
    images = test.images[:5]
    good = []
    for i, img in enumerate(images):
        path = root / "folder" / ("sub" if i % 2 else "") / f"digit{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy(), mode="L").save(path)
        good.append(path)
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(range(256)) * 4)
    real = root / "real.jpg"
    Image.fromarray(images[0][0].numpy(), mode="L").resize((64, 64)).save(real, quality=95)
    truncated = root / "truncated.jpg"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    text = root / "notes.txt"
    text.write_text("not an image\n")
    (root / "folder" / "readme.md").write_text("skipped: no image extension")
    return {"root": root, "good": good, "images": images, "bad": [corrupt, truncated, text], "real": real}


def test_folders_are_walked_for_image_extensions_only(image_files):
    found = find_images([image_files["root"] / "folder"])
    assert sorted(found) == sorted(image_files["good"])
    assert find_images([image_files["bad"][2]]) == [image_files["bad"][2]], "explicit files are kept"


def test_predict_reports_bad_files_and_ranks_the_good_ones(loaded_run, image_files):
    paths = [image_files["root"] / "folder", *image_files["bad"], image_files["real"]]
    preds = predict(loaded_run, paths, top_k=3, batch_size=2, temperature=None)
    assert len(preds) == len(image_files["good"]) + 4
    by_path = {p.path: p for p in preds}
    for bad in image_files["bad"]:
        row = by_path[str(bad)]
        assert row.error and not row.classes, f"{bad.name} is reported as an error"
    good = [p for p in preds if p.error is None]
    assert len(good) == len(image_files["good"]) + 1
    for p in good:
        assert len(p.classes) == 3 and len(p.indices) == 3
        assert p.probabilities == sorted(p.probabilities, reverse=True)
        assert sum(p.probabilities) <= 1 + 1e-9
        assert [loaded_run.classes[i] for i in p.indices] == p.classes


def test_predict_matches_the_runs_eval_pipeline_with_its_temperature(loaded_run, image_files):
    # Native-size files decode to the very tensors of the test split: same logits as evaluation.
    temperature = 1.7
    preds = predict(loaded_run, image_files["good"], top_k=10, temperature=temperature)
    want = (loaded_run.logits(image_files["images"]) / temperature).double().softmax(1)
    for i, p in enumerate(preds):
        assert p.error is None
        got = torch.zeros(10, dtype=torch.float64)
        got[p.indices] = torch.tensor(p.probabilities, dtype=torch.float64)
        assert torch.allclose(got, want[i], atol=1e-5)
        assert sum(p.probabilities) == pytest.approx(1.0)


def test_predictions_are_written_as_csv_and_json(loaded_run, image_files, tmp_path):
    preds = predict(loaded_run, [*image_files["good"][:2], image_files["bad"][2]], top_k=2)
    rows = list(csv.DictReader(open(write_predictions(preds, tmp_path / "p.csv"))))
    assert [r["path"] for r in rows] == [p.path for p in preds]
    assert rows[0]["class_1"] == preds[0].classes[0] and float(rows[0]["prob_1"]) > 0
    assert rows[2]["error"] and not rows[2]["class_1"]
    data = json.loads(write_predictions(preds, tmp_path / "p.json", meta={"temperature": None}).read_text())
    assert data["temperature"] is None and len(data["predictions"]) == 3
    assert data["predictions"][2]["error"]
    table = format_predictions(preds)
    assert "ERROR" in table and "2 predicted, 1 unreadable" in table


def test_predict_from_the_command_line(deploy_run_dir, image_files, tmp_path, capsys):
    folder = str(image_files["root"] / "folder")
    assert main(["predict", str(deploy_run_dir), folder, str(image_files["bad"][0]), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "5 predicted, 1 unreadable" in out and "ERROR" in out
    out_file = tmp_path / "preds.json"
    args = ["predict", str(deploy_run_dir), folder, "--top-k", "2", "--out", str(out_file), "--device", "cpu"]
    assert main(args) == 0
    data = json.loads(out_file.read_text())
    assert len(data["predictions"]) == 5 and all(len(p["classes"]) == 2 for p in data["predictions"])


@pytest.mark.parametrize("val_split", [0, 2], ids=["whole-train-folder", "val-carved-from-train"])
def test_folder_runs_use_the_folder_eval_transform_in_rgb(tmp_path, val_split):
    """An image-folder run (RGB, resize + centre crop): predict sees what evaluation sees, also when
    val is carved out of train/ (the training split is then a subset of the folder)."""
    from patchswap.data import build_data
    from patchswap.deploy import LoadedRun
    from patchswap.models import create_model

    rng = torch.Generator().manual_seed(0)
    files = []
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            for i in range(2):
                path = tmp_path / "data" / split / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = torch.randint(0, 256, (40 + 8 * i, 56, 3), dtype=torch.uint8, generator=rng)
                Image.fromarray(pixels.numpy()).save(path)
                files.append(path)
    gray = tmp_path / "gray.png"
    Image.open(files[0]).convert("L").save(gray)
    bundle = build_data(f"folder:{tmp_path / 'data'}", image_size=16, val_split=val_split)
    torch.manual_seed(0)
    model = create_model("resnet8", 2, in_chans=3).eval()
    run = LoadedRun(tmp_path / "none.ckpt", None, {}, model, bundle, torch.device("cpu"))
    test_files = [f for f in files if "test" in f.parts]
    preds = predict(run, [*test_files, gray], top_k=2, temperature=None)
    images = torch.stack([bundle.test[i][0] for i in range(len(bundle.test))])
    want = run.logits(images).double().softmax(1)
    order = [str(p) for p, _ in bundle.test.samples]
    for p in preds[:-1]:
        row = want[order.index(p.path)]
        assert p.probabilities == pytest.approx(row.sort(descending=True).values.tolist(), abs=1e-5)
    assert preds[-1].error is None and len(preds[-1].classes) == 2, "grayscale files become RGB"


def test_rebuilding_a_run_s_folder_does_not_repeat_the_skipped_files_warning(tmp_path):
    import warnings

    from PIL import Image

    from patchswap.data import build_data
    from patchswap.deploy.loading import build_run_data

    for cls in ("a", "b"):
        folder = tmp_path / "pics" / "train" / cls
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"{i}.png")
    (tmp_path / "pics" / "train" / "a" / "notes.txt").write_text("not an image")
    name = f"folder:{tmp_path / 'pics'}"
    with pytest.warns(UserWarning, match="skipped 1 unusable file"):  # training says it once
        build_data(name, image_size=8, val_split=0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        bundle = build_run_data({"data": {"name": name, "image_size": 8, "val_split": 0}})
    assert bundle.classes == ["a", "b"]
    assert not [w for w in seen if "unusable" in str(w.message)]


def test_a_run_moved_without_its_image_folder_still_predicts_the_same(tmp_path, capsys):
    """Classes, crop and normalisation come from best.safetensors' header when the folder is gone;
    calibrating still needs the data and says so."""
    from patchswap.deploy import DeployError, calibrate

    rng = np.random.default_rng(0)
    root = tmp_path / "pics"
    for c, cls in enumerate(("red", "green", "blue")):
        for split, n in (("train", 10), ("test", 2)):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 80, (20, 24, 3), dtype=np.uint8)
                pixels[..., c] += 150
                Image.fromarray(pixels).save(folder / f"{i}.png")
    run_dir = tmp_path / "run"
    flags = ["--data", f"folder:{root}", "--data.image_size", "16", "--val-split", "6", "--model", "resnet8"]
    flags += ["--method", "ce", "--epochs", "1", "--batch-size", "8", "--run-dir", str(run_dir)]
    assert main(["train", *flags, "--trainer.progress_bar", "false"]) == 0
    capsys.readouterr()
    new = tmp_path / "new"
    shutil.copytree(root / "test", new)
    before = predict(run_dir, [new], top_k=3)
    root.rename(tmp_path / "elsewhere")
    with pytest.warns(UserWarning, match="data is not available here .* best.safetensors"):
        after = predict(run_dir, [new], top_k=3)
    assert [p.path for p in after] == [p.path for p in before] and len(after) == 6
    for a, b in zip(after, before, strict=True):
        assert a.classes == b.classes and a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    with pytest.raises(DeployError, match="cannot rebuild the run's data"):
        calibrate(run_dir)


def test_the_bundle_from_the_weights_header_matches_the_rebuilt_data(loaded_run):
    from patchswap.deploy import DeployError
    from patchswap.deploy.loading import bundle_from_weights

    stand_in = bundle_from_weights(loaded_run.checkpoint, loaded_run.config, DeployError("gone"))
    real = loaded_run.bundle
    shape = (real.classes, real.in_chans, real.image_size)
    assert (stand_in.classes, stand_in.in_chans, stand_in.image_size) == shape
    assert stand_in.in_memory and stand_in.val is None and stand_in.test is None
    x = torch.randint(0, 256, (2, real.in_chans, *real.image_size), dtype=torch.uint8)
    assert torch.allclose(stand_in.eval_augment(x), real.eval_augment.cpu()(x), atol=1e-5)
