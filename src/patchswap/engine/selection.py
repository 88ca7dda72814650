"""What every training command does after its arguments are checked: fit, take the checkpoint selected
on validation, evaluate it once on val and test, keep its weights, and record how the run went.

``patchswap train`` and ``patchswap transfer`` build different runs (a classifier, a dense model) but
end the same way; one home keeps the protocol (the selected checkpoint, never the last, is what val and
test see; test runs once) and the summary's shared fields from drifting apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from patchswap.engine.callbacks import read_metrics, training_time
from patchswap.engine.harness import fit_on_all_ranks, quiet_lightning
from patchswap.runs import load_checkpoint, run_relative, save_weights

__all__ = ["BuiltRun", "Selected", "fit_and_select", "run_record"]


class BuiltRun(Protocol):
    """What a command's run object offers (``ClassificationRun``, the transfer run)."""

    model: Any
    module: L.LightningModule
    datamodule: L.LightningDataModule

    def trainer(
        self, run_dir: Path | None, *, callbacks: list | None = None, fit: bool = True
    ) -> L.Trainer: ...

    def weights_metadata(self) -> dict[str, str]: ...


@dataclass
class Selected:
    """The checkpoint chosen on validation (the last one without validation) and Lightning's results on
    it: one list of metric dicts per split (empty when the split was not evaluated)."""

    best: Path
    val: list[dict[str, float]] = field(default_factory=list)
    test: list[dict[str, float]] = field(default_factory=list)


def fit_and_select(
    run: BuiltRun,
    run_dir: Path,
    callbacks: list[Any],
    checkpoint: ModelCheckpoint,
    resume_from: Path | None,
    *,
    validate: bool = True,
    test: bool = True,
) -> Selected | None:
    """Fit on every rank; on rank 0, evaluate the selected checkpoint on val then test (each once) and
    write ``checkpoints/{last,best}.safetensors``. None on the other ranks (they write nothing)."""
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    with quiet_lightning():
        if not fit_on_all_ranks(run.trainer(run_dir, callbacks=callbacks), run, resume_from):
            return None
        meta = run.weights_metadata()
        save_weights(run.model, ckpt_dir / "last.safetensors", meta)
        selected = Selected(Path(checkpoint.best_model_path) if checkpoint.best_model_path else last)
        evaluator = run.trainer(None, fit=False)
        # validate() loads the selected checkpoint into the model, whose weights are saved next; without
        # validation the selected checkpoint is the last epoch, which the model already holds.
        if validate:
            selected.val = evaluator.validate(
                run.module, datamodule=run.datamodule, ckpt_path=str(selected.best), verbose=False
            )
        save_weights(run.model, ckpt_dir / "best.safetensors", meta)
        if test:
            selected.test = evaluator.test(
                run.module, datamodule=run.datamodule, ckpt_path=str(selected.best), verbose=False
            )
    return selected


def run_record(run_dir: Path, best: Path) -> dict[str, Any]:
    """The summary fields every run has: epochs, the selected epoch, training time and throughput, and
    the selected checkpoint's path relative to the run (the run directory may be moved or committed)."""
    rows = read_metrics(run_dir / "metrics.csv")
    seconds, images = training_time(rows)
    return {
        "epochs_run": len(rows),
        "best_epoch": int(load_checkpoint(best)["epoch"]) + 1 if best.exists() else None,
        "train_seconds": round(seconds, 2),
        "train_images_per_s": round(images / seconds, 1) if seconds else None,
        "images_seen": int(round(images)),
        "best_checkpoint": run_relative(best, run_dir),
    }
