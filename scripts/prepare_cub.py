"""Turn CUB-200-2011's official archive layout into the train/ and test/ folders patchswap reads.

The archive (CUB_200_2011.tgz, unpacked) holds::

    CUB_200_2011/images/<class>/<image>.jpg
    CUB_200_2011/images.txt              <image id> <class>/<image>.jpg
    CUB_200_2011/train_test_split.txt    <image id> <1: train, 0: test>
    CUB_200_2011/image_class_labels.txt  <image id> <class id, 1..200>
    CUB_200_2011/classes.txt             <class id> <class folder name, e.g. 001.Black_footed_Albatross>

This writes ``OUT/train/<class>/<image>.jpg`` (5,994 images) and ``OUT/test/<class>/<image>.jpg``
(5,794) as hard links to the originals (no extra disk space; ``--copy`` copies instead, e.g. across
file systems), checking that every image's folder agrees with its label. Then::

    python scripts/prepare_cub.py CUB_200_2011 data/cub200
    patchswap train --config configs/finetune/cub200-resnet50.yaml

The official split has no validation set: patchswap carves ``data.val_split`` out of train/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")


def _table(path: Path) -> dict[str, str]:
    """``first column -> rest of the line`` of one of the archive's text files."""
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.strip().partition(" ")
        if not sep or not value.strip():
            raise ValueError(f"{path}:{number}: expected '<id> <value>', got {line!r}")
        out[key] = value.strip()
    return out


def prepare(root: Path, out: Path, *, copy: bool = False) -> dict[str, int]:
    """Link (or copy) every image of ``root`` into ``out/train`` or ``out/test``; returns the counts."""
    missing = [name for name in (*FILES, "images") if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(f"{root} is not CUB-200-2011's archive folder: missing {', '.join(missing)}")
    for split in ("train", "test"):
        if (out / split).exists() and any((out / split).iterdir()):
            raise FileExistsError(
                f"{out / split} already exists and is not empty; remove it or pick another OUT"
            )
    images, is_train = _table(root / "images.txt"), _table(root / "train_test_split.txt")
    labels, classes = _table(root / "image_class_labels.txt"), _table(root / "classes.txt")
    counts = {"train": 0, "test": 0}
    linked = not copy
    for image_id, rel in images.items():
        if image_id not in is_train or image_id not in labels:
            raise ValueError(
                f"image {image_id} ({rel}) is missing from train_test_split.txt or image_class_labels.txt"
            )
        class_name = classes[labels[image_id]]
        folder, _, name = rel.partition("/")
        if folder != class_name:
            raise ValueError(f"image {image_id}: {rel} lies in {folder!r} but is labelled {class_name!r}")
        split = "train" if is_train[image_id] == "1" else "test"
        target = out / split / class_name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = root / "images" / rel
        if linked:
            try:
                os.link(source, target)
            except OSError as err:  # another file system, or links not allowed: copy from here on
                print(f"hard links failed ({err.strerror}); copying instead", file=sys.stderr)
                linked = False
        if not linked:
            shutil.copy2(source, target)
        counts[split] += 1
    counts["classes"] = len({classes[labels[i]] for i in images})
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "root", type=Path, help="the unpacked CUB_200_2011 folder (holds images/, images.txt, ...)"
    )
    parser.add_argument("out", type=Path, help="where train/ and test/ are written")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of hard-linking them")
    args = parser.parse_args(argv)
    try:
        counts = prepare(args.root, args.out, copy=args.copy)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: train {counts['train']} | test {counts['test']} images | {counts['classes']} classes; "
        f"train with --data folder:{args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
