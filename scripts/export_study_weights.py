#!/usr/bin/env python
"""Keep a study's evidence re-usable: the best weights of every finished run as fp16 safetensors.

For each finished run under the given study folders (a directory holding ``summary.json``), read
``checkpoints/best.safetensors`` (or, failing that, the model part of ``checkpoints/best.ckpt``), cast
its floating-point tensors to float16 (integer buffers such as BatchNorm's step counter are kept) and
write ``best-fp16.safetensors`` beside ``summary.json``. The file is small enough to commit (wrn_16_2:
about 1.4 MB) while checkpoints stay out of git. Each export is checked: the fp16 weights are loaded
into a freshly built model of the run's config (as ``--model.pretrained`` would load them) and its
predictions on a fixed batch are compared with the fp32 weights'.

Re-use a run's weights, e.g. to evaluate on other data or to fine-tune::

    from patchswap.models import create_model, load_pretrained
    model = load_pretrained(create_model("wrn_16_2", num_classes=10), "RUN/best-fp16.safetensors")

(``load_pretrained`` casts to the model's dtype; ``patchswap train --model.pretrained FILE`` does the same.)

Usage, from the repo root::

    python scripts/export_study_weights.py docs/results/cifar10-cpu-converged [--force] [--dry-run]

Runs without a checkpoint (e.g. records copied from another machine) are listed and skipped; an
existing ``best-fp16.safetensors`` is kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch
import yaml

OUT_NAME = "best-fp16.safetensors"


def best_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], Path] | None:
    """The run's best weights (fp32 as trained) and the file they came from, or None."""
    from safetensors.torch import load_file

    ckpt_dir = run_dir / "checkpoints"
    st = ckpt_dir / "best.safetensors"
    if st.is_file():
        return load_file(str(st)), st
    ck = ckpt_dir / "best.ckpt"
    if ck.is_file():
        from patchswap.engine.checkpoint import load_checkpoint

        sd = load_checkpoint(ck)["state_dict"]
        model = {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
        return (model or dict(sd)), ck
    return None


def to_fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: (v.to(torch.float16) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in state.items()
    }


def _num_classes(summary: dict) -> int:
    m = re.search(r"\|\s*([\d,]+) classes\s*\|", str(summary.get("data", "")))
    if not m:
        raise ValueError("summary.json's 'data' does not say how many classes the run has")
    return int(m.group(1).replace(",", ""))


def check(run_dir: Path, fp32: dict[str, torch.Tensor], fp16_file: Path, summary: dict) -> str:
    """Load the fp16 file as a user would and compare its predictions with the fp32 weights'."""
    from patchswap.models import create_model, load_pretrained

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    name, n = cfg["model"]["name"], _num_classes(summary)
    ref = create_model(name, num_classes=n)
    ref.load_state_dict(fp32)
    half = load_pretrained(create_model(name, num_classes=n), fp16_file)
    ref.eval()
    half.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, 32, 32, generator=g)  # normalised-scale inputs; a fixed batch
    with torch.no_grad():
        a, b = ref(x), half(x)
    agree = (a.argmax(1) == b.argmax(1)).float().mean().item()
    diff = (a - b).abs().max().item()
    if agree < 0.99:
        raise RuntimeError(f"{fp16_file}: fp16 weights change {100 * (1 - agree):.1f}% of predictions")
    return f"argmax agreement {100 * agree:.1f}%, max |logit diff| {diff:.4f}"


def export(run_dir: Path, *, force: bool, dry_run: bool) -> str:
    out = run_dir / OUT_NAME
    if out.exists() and not force:
        return "kept (exists)"
    found = best_state(run_dir)
    if found is None:
        return "skipped: no checkpoints/best.safetensors or best.ckpt"
    state, source = found
    if dry_run:
        return f"would export {source.name}"
    from safetensors.torch import save_file

    summary = json.loads((run_dir / "summary.json").read_text())
    meta = {
        "format": "patchswap run weights, float16 (cast from the fp32 best checkpoint)",
        "source": source.name,
        "model": str(summary.get("model")),
        "method": str(summary.get("method")),
        "seed": str(summary.get("seed")),
        "best_epoch": str(summary.get("best_epoch")),
        "selected_on": str(summary.get("selected_on")),
        "val_acc": str((summary.get("val") or {}).get("acc")),
        "test_acc": str((summary.get("test") or {}).get("acc")),
    }
    save_file(to_fp16(state), str(out), metadata=meta)
    note = check(run_dir, state, out, summary)
    return f"wrote {out.stat().st_size / 1e6:.2f} MB from {source.name}; {note}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "folders", nargs="+", type=Path, help="study folders (searched for runs with a summary.json)"
    )
    p.add_argument("--force", action="store_true", help="rewrite existing best-fp16.safetensors files")
    p.add_argument("--dry-run", action="store_true", help="only list what would be exported")
    args = p.parse_args(argv)
    runs = sorted({s.parent for f in args.folders for s in f.rglob("summary.json")})
    if not runs:
        print("no finished runs (no summary.json) under " + ", ".join(map(str, args.folders)))
        return 1
    failed = 0
    for run_dir in runs:
        try:
            print(f"{run_dir}: {export(run_dir, force=args.force, dry_run=args.dry_run)}")
        except Exception as e:  # noqa: BLE001 - report every run, fail at the end
            failed += 1
            print(f"{run_dir}: FAILED {type(e).__name__}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
