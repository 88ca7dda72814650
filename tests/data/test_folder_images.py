"""Image folders: torchvision.io decoding against the PIL reference, bad files, empty and unknown classes."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchswap.data import BadImageError, FolderImages, build_data
from patchswap.data.folder_images import check_image_file

pytest.importorskip("torchvision")


def _jpeg_bytes(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A smooth picture (JPEG-friendly), so decoders agree closely."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _good_folder(root: Path, classes: dict[str, int], split: str = "train") -> None:
    for k, (name, n) in enumerate(classes.items()):
        d = root / split / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (d / f"{i}.jpg").write_bytes(_jpeg_bytes(100 * k + i))


def _bad_files(d: Path) -> dict[str, Path]:
    good = _jpeg_bytes(7)
    files = {
        # passes the header scan (JPEG start and end markers) but cannot be decoded: fails mid-epoch
        "corrupt": d / "corrupt.jpg",
        "truncated": d / "truncated.jpg",
        "text": d / "notes.txt",
        "fake": d / "fake.jpg",
    }
    rng = np.random.default_rng(0)
    files["corrupt"].write_bytes(
        good[:20] + rng.integers(0, 256, 600, dtype=np.uint8).tobytes() + b"\xff\xd9"
    )
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["text"].write_text("labels were checked by hand\n")
    files["fake"].write_text("this is not a JPEG at all")
    return files


def test_bad_files_are_skipped_with_a_count_and_never_stop_an_epoch(tmp_path: Path) -> None:
    _good_folder(tmp_path, {"a": 4, "b": 4})
    bad = _bad_files(tmp_path / "train" / "a")
    with pytest.warns(UserWarning, match=r"skipped 3 unusable file\(s\)") as record:
        b = build_data(f"folder:{tmp_path}", image_size=16, val_split=0)
    message = str(record[0].message)
    for key in ("truncated", "text", "fake"):
        assert str(bad[key]) in message
    assert "truncated JPEG" in message and "not an image" in message
    train = b.train
    assert isinstance(train, FolderImages) and len(train) == 9  # 8 good + the corrupt one
    assert {p for p, _ in train.bad} == {str(bad[k]) for k in ("truncated", "text", "fake")}

    corrupt = next(i for i, (p, _) in enumerate(train.samples) if p == str(bad["corrupt"]))
    with pytest.warns(
        UserWarning, match=rf"skipped an unreadable image: cannot decode image {bad['corrupt']}"
    ):
        images, labels = train.__getitems__(list(range(len(train))))
    assert images.shape == (9, 3, 16, 16) and images.dtype == torch.uint8
    assert labels.tolist() == train.targets.tolist()
    # its place in the batch holds another image of the same class
    assert int(labels[corrupt]) == 0 and images[corrupt].float().std() > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the failure is remembered: later batches go straight on
        assert train.__getitems__([corrupt]).images.shape == (1, 3, 16, 16)


def test_on_bad_image_error_stops_before_training_or_names_the_file(tmp_path: Path) -> None:
    _good_folder(tmp_path, {"a": 3, "b": 3})
    bad = _bad_files(tmp_path / "train" / "a")
    with pytest.raises(BadImageError, match=r"3 unusable file\(s\).*data\.on_bad_image=skip"):
        build_data(f"folder:{tmp_path}", image_size=16, val_split=0, on_bad_image="error")
    for key in ("truncated", "text", "fake"):
        bad[key].unlink()
    b = build_data(f"folder:{tmp_path}", image_size=16, val_split=0, on_bad_image="error")
    corrupt = next(i for i, (p, _) in enumerate(b.train.samples) if p == str(bad["corrupt"]))
    with pytest.raises(BadImageError, match=rf"{bad['corrupt']}.*data\.on_bad_image=skip"):
        b.train.__getitems__([0, corrupt])
    with pytest.raises(ValueError, match="on_bad_image must be one of skip, error"):
        build_data(f"folder:{tmp_path}", image_size=16, on_bad_image="ignore")


def test_empty_class_and_unknown_eval_class_fail_before_training(tmp_path: Path) -> None:
    _good_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "train" / "c").mkdir()
    with pytest.raises(ValueError, match=rf"no usable images: {tmp_path / 'train' / 'c'}"):
        build_data(f"folder:{tmp_path}", image_size=16)
    (tmp_path / "train" / "c" / "notes.txt").write_text("only a text file")  # still no image
    with pytest.warns(UserWarning, match="skipped 1"), pytest.raises(ValueError, match="no usable images"):
        build_data(f"folder:{tmp_path}", image_size=16)
    (tmp_path / "train" / "c" / "notes.txt").unlink()
    (tmp_path / "train" / "c").rmdir()
    _good_folder(tmp_path, {"a": 1, "zebra": 1}, split="val")
    with pytest.raises(
        ValueError, match=r"val has class folder\(s\) \['zebra'\] that the train/ folder lacks"
    ):
        build_data(f"folder:{tmp_path}", image_size=16)


def test_decoding_matches_the_pil_reference(tmp_path: Path) -> None:
    from torchvision import transforms as T

    _good_folder(tmp_path, {"a": 2, "b": 1})
    b = build_data(f"folder:{tmp_path}", image_size=24, val_split=0)
    train, evals = b.train, b.train.with_train(False)
    for index in range(len(train)):
        pil = Image.open(train.samples[index][0]).convert("RGB")
        ref_eval = T.Compose([T.Resize(int(24 * 256 / 224)), T.CenterCrop(24), T.PILToTensor()])(pil)
        got = evals[index][0]
        diff = (got.int() - ref_eval.int()).abs()
        assert got.shape == ref_eval.shape == (3, 24, 24)
        assert diff.float().mean() < 2.0 and diff.max() <= 16, (diff.float().mean(), diff.max())
        # the training crop draws its box exactly as torchvision's RandomResizedCrop does
        torch.manual_seed(index)
        got = train[index][0]
        torch.manual_seed(index)
        ref_train = T.PILToTensor()(T.RandomHorizontalFlip()(T.RandomResizedCrop(24)(pil)))
        diff = (got.int() - ref_train.int()).abs()
        assert diff.float().mean() < 2.0 and diff.max() <= 24, (diff.float().mean(), diff.max())


def test_pretrained_input_sets_size_and_statistics_unless_overridden(tmp_path: Path) -> None:
    _good_folder(tmp_path, {"a": 2, "b": 2})
    model_input = (32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    b = build_data(f"folder:{tmp_path}", val_split=0, model_input=model_input)
    assert b.image_size == (32, 32) and b.mean == (0.5,) * 3 and b.std == (0.25,) * 3
    assert b.train[0][0].shape == (3, 32, 32)
    b = build_data(f"folder:{tmp_path}", image_size=16, val_split=0, model_input=model_input)
    assert b.image_size == (16, 16) and b.mean == (0.5,) * 3
    b = build_data(f"folder:{tmp_path}", val_split=0)
    assert b.image_size == (224, 224) and b.mean == pytest.approx((0.485, 0.456, 0.406))


def test_check_image_file_reasons(tmp_path: Path) -> None:
    good = tmp_path / "ok.jpg"
    good.write_bytes(_jpeg_bytes(1))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert check_image_file(str(good)) is None
    assert check_image_file(str(empty)) == "empty file"
    assert check_image_file(str(tmp_path / "missing.jpg")).startswith("unreadable")


def test_a_missing_relative_folder_says_where_it_was_looked_for(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"'pics' is relative to the current folder, .*trained in"):
        build_data("folder:pics")
    with pytest.raises(ValueError, match="has no train/ directory") as e:
        build_data(f"folder:{tmp_path / 'pics'}")
    assert "is relative to the current folder" not in str(e.value)  # an absolute path needs no note
