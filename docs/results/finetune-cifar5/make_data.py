"""Write the two 5-class halves of CIFAR-10 (../shared/data, part 1) this study uses, under runs/cifar5/.

pretrain-0to4.npz: airplane, automobile, bird, cat, deer (12,500 images, 2,500 per class)
finetune-5to9.npz: dog, frog, horse, ship, truck (12,500 images), labels renumbered 0..4

Run from the repository root: python docs/results/finetune-cifar5/make_data.py
"""

from pathlib import Path

import numpy as np

src = np.load("../shared/data/cifar10-train-part1.npz")
x, y, classes = src["x"], src["y"], src["classes"]
out = Path("runs/cifar5")
out.mkdir(parents=True, exist_ok=True)
for name, kept in (("pretrain-0to4", [0, 1, 2, 3, 4]), ("finetune-5to9", [5, 6, 7, 8, 9])):
    mask = np.isin(y, kept)
    new_label = np.searchsorted(kept, y[mask]).astype(np.int64)
    names = np.array([str(classes[c]) for c in kept])
    np.savez(out / f"{name}.npz", x=x[mask], y=new_label, classes=names)
    print(f"{out / name}.npz: {mask.sum()} images, classes {', '.join(names)}")
