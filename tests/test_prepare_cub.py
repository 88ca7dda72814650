"""scripts/prepare_cub.py on a tiny fake CUB-200-2011 archive layout."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_cub.py"


def _script():
    spec = importlib.util.spec_from_file_location("prepare_cub", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_cub(root: Path) -> dict[str, str]:
    """3 classes x 3 images; image ids 1..9; ids 1, 4, 7 are test. Returns image path -> split."""
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    rng = np.random.default_rng(0)
    images, split, labels, expected = [], [], [], {}
    image_id = 0
    for c, name in enumerate(classes, 1):
        (root / "images" / name).mkdir(parents=True)
        for k in range(3):
            image_id += 1
            rel = f"{name}/{name.split('.')[1]}_{k:04d}.jpg"
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / "images" / rel)
            is_train = int(k != 0)
            images.append(f"{image_id} {rel}")
            split.append(f"{image_id} {is_train}")
            labels.append(f"{image_id} {c}")
            expected[rel] = "train" if is_train else "test"
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{i} {n}" for i, n in enumerate(classes, 1)) + "\n")
    return expected


@pytest.mark.parametrize("copy", [False, True], ids=["hard-links", "copies"])
def test_official_layout_becomes_train_and_test_folders(tmp_path, copy, capsys):
    root, out = tmp_path / "CUB_200_2011", tmp_path / "cub"
    expected = _fake_cub(root)
    argv = [str(root), str(out)] + (["--copy"] if copy else [])
    assert _script().main(argv) == 0
    assert "train 6 | test 3 images | 3 classes" in capsys.readouterr().out
    for rel, split in expected.items():
        target = out / split / rel
        assert target.read_bytes() == (root / "images" / rel).read_bytes()
        assert target.samefile(root / "images" / rel) is not copy  # a hard link unless --copy
        other = out / ("test" if split == "train" else "train") / rel
        assert not other.exists()
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(
        p.name for p in (out / "test").iterdir()
    )


def test_the_folders_load_as_patchswap_folder_data(tmp_path):
    from patchswap.data import build_data

    root, out = tmp_path / "CUB_200_2011", tmp_path / "cub"
    _fake_cub(root)
    _script().prepare(root, out)
    bundle = build_data(f"folder:{out}", val_split=0, image_size=8)
    assert bundle.num_classes == 3 and len(bundle.train) == 6 and len(bundle.test) == 3


def test_a_label_that_disagrees_with_the_folder_and_a_second_run_are_errors(tmp_path, capsys):
    root, out = tmp_path / "CUB_200_2011", tmp_path / "cub"
    _fake_cub(root)
    script = _script()
    assert script.main([str(root), str(out)]) == 0
    assert script.main([str(root), str(out)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    (root / "image_class_labels.txt").write_text(
        (root / "image_class_labels.txt").read_text().replace("1 1", "1 2", 1)
    )
    assert script.main([str(root), str(tmp_path / "other")]) == 2
    assert (
        "lies in '001.Black_footed_Albatross' but is labelled '002.Laysan_Albatross'"
        in capsys.readouterr().err
    )
    assert script.main([str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "missing images.txt" in capsys.readouterr().err
