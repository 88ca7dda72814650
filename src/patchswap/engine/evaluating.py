"""``patchswap eval``: a run's checkpoint on its val or test split, plainly or with the evaluation suite."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from patchswap.deploy import TemperatureScaled, load_temperature
from patchswap.devices import resolve_device
from patchswap.engine.config import ConfigError, RunConfig, apply_mapping
from patchswap.engine.harness import RunError, quiet_lightning, split_metrics
from patchswap.engine.training import ClassificationRun
from patchswap.runs import (
    CONFIG_KEY,
    CheckpointError,
    load_checkpoint,
    locate_checkpoint,
    network_state,
    run_dir_of,
)

__all__ = ["evaluate"]


def _locate(target: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint, run_dir) from a run directory or a checkpoint path."""
    ckpt_path = locate_checkpoint(target)
    return ckpt_path, run_dir_of(ckpt_path)


def _load_model_weights(model: torch.nn.Module, state_dict: dict[str, Any]) -> None:
    """The network's weights from a Lightning checkpoint (see :func:`patchswap.runs.network_state`)."""
    model.load_state_dict(network_state(state_dict))


# The keys that cut a run's data into train / val / test (and its label noise): an evaluation that
# changed them would re-cut the splits, and training images could land in the test set.
SPLIT_KEYS = ("data.val_split", "data.test_split", "data.split_seed", "data.train_subset", "data.label_noise")


def _apply_overrides(cfg: RunConfig, overrides: dict[str, str]) -> None:
    """Apply ``--set`` overrides, refusing any that changes the run's splits (a value equal to the
    saved one is fine). ``data.name`` may change: that evaluates another dataset."""
    for key, text in overrides.items():
        section, _, name = key.partition(".")
        before = getattr(getattr(cfg, section, None), name, None)
        cfg.set(key, text, from_text=True)
        if key in SPLIT_KEYS and getattr(getattr(cfg, section), name) != before:
            raise ConfigError(
                f"{key} cannot change when evaluating: the run was trained and selected with {key}="
                f"{before}, and a new value re-cuts its splits (training images could land in the test "
                "set). Evaluate another dataset with --set data.name=NAME, or train a run with the split "
                "you want"
            )


def _no_split(cfg: RunConfig, split: str, other_exists: bool) -> str:
    """What to do when the run's data has no ``split`` (``other_exists``: it has the other one)."""
    if not other_exists:
        return (
            f"the run's data ({cfg.data.name}) has neither a validation nor a test split (data.val_split="
            f"{cfg.data.val_split}, data.test_split={cfg.data.test_split}, and no val/ or test/ of its own): "
            "evaluate another dataset with --set data.name=NAME, or train again with --data.val_split N "
            "or --data.test_split N"
        )
    if split == "val":
        return (
            f"the run was trained without a validation split (data.val_split={cfg.data.val_split}); "
            "evaluate --split test"
        )
    return (
        f"the run's data ({cfg.data.name}) has no test split: it has none of its own and the run was "
        "trained without data.test_split, and an evaluation cannot carve one (training images would "
        "land in it). Evaluate the validation split with --split val (it selected the checkpoint, so "
        "its accuracy is optimistic), evaluate another dataset that has a test split with --set "
        "data.name=NAME, or train again with --data.test_split N"
    )


def evaluate(
    target: str | Path,
    *,
    split: str = "test",
    overrides: dict[str, str] | None = None,
    suite: str | list[str] | tuple[str, ...] | None = None,
    options: Any = None,
    out_dir: str | Path | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on its run's ``val`` or ``test`` split; returns the results as a dict.

    Without ``suite``: accuracy, NLL and ECE (written to ``RUN_DIR/eval-<split>.json``). With ``suite``
    (``"all"`` or some of calibration, fgsm, pgd, corruptions; ``options`` a
    :class:`~patchswap.evaluation.suite.SuiteOptions`): the evaluation suite, written as eval.json,
    eval.md and plots to ``out_dir`` (default: the run directory, or the checkpoint's folder; for the
    val split a subfolder ``eval-val``).
    """
    if split not in ("val", "test"):
        raise ConfigError(f"split must be val or test, got {split!r}")
    ckpt_path, run_dir = _locate(target)
    ckpt = load_checkpoint(ckpt_path)
    if CONFIG_KEY not in ckpt:
        raise CheckpointError(f"{ckpt_path} carries no patchswap config; was it written by patchswap train?")
    cfg = RunConfig()
    apply_mapping(cfg, ckpt[CONFIG_KEY], str(ckpt_path))
    _apply_overrides(cfg, overrides or {})
    cfg.trainer.progress_bar = False
    run = ClassificationRun(cfg)
    temperature = load_temperature(ckpt_path)  # from `patchswap calibrate` on this very checkpoint
    run.module.temperature = temperature
    dataset = run.bundle.val if split == "val" else run.bundle.test
    if dataset is None:
        other = run.bundle.test if split == "val" else run.bundle.val
        raise RunError(_no_split(cfg, split, other is not None))
    if suite:
        return _evaluate_suite(
            run, ckpt, ckpt_path, run_dir, dataset, split, suite, options, out_dir, log, temperature
        )
    t0 = time.perf_counter()
    with quiet_lightning():
        evaluator = run.trainer(None, fit=False)
        if split == "val":
            res = split_metrics(
                evaluator.validate(
                    run.module, datamodule=run.datamodule, ckpt_path=str(ckpt_path), verbose=False
                ),
                "val",
            )
        else:
            res = split_metrics(
                evaluator.test(
                    run.module, datamodule=run.datamodule, ckpt_path=str(ckpt_path), verbose=False
                ),
                "test",
            )
    result = {
        "checkpoint": str(ckpt_path),
        "split": split,
        "temperature": temperature,
        "images": len(dataset),  # type: ignore[arg-type]
        "seconds": round(time.perf_counter() - t0, 2),
        **res,
    }
    if run_dir is not None:
        (run_dir / f"eval-{split}.json").write_text(json.dumps(result, indent=2))
    return result


def _evaluate_suite(
    run: ClassificationRun,
    ckpt: dict[str, Any],
    ckpt_path: Path,
    run_dir: Path | None,
    dataset: Any,
    split: str,
    suite: str | list[str] | tuple[str, ...],
    options: Any,
    out_dir: str | Path | None,
    log: Any,
    temperature: float | None = None,
) -> dict[str, Any]:
    """The evaluation suite on the checkpoint's network and split (see :mod:`patchswap.evaluation.suite`)."""
    from patchswap.evaluation.suite import ImageSource, SuiteOptions, run_suite, write_reports

    cfg, bundle = run.cfg, run.bundle
    options = dataclasses.replace(options or SuiteOptions(), parts=suite)
    if options.batch_size is None:
        options = dataclasses.replace(options, batch_size=cfg.data.eval_batch_size)
    device = resolve_device(cfg.trainer.accelerator)
    model = run.model
    _load_model_weights(model, ckpt["state_dict"])
    model = model.to(device).eval()
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if temperature is not None:  # calibrated: same accuracy and attacks' argmax, calibrated confidences
        model = TemperatureScaled(model, temperature)
    source = ImageSource(
        dataset,
        max_images=options.max_images,
        seed=options.seed,
        num_workers=0 if bundle.in_memory else cfg.data.num_workers,
    )
    t0 = time.perf_counter()
    res = run_suite(
        model,
        source,
        mean=bundle.mean,
        std=bundle.std,
        options=options,
        device=device,
        channels_last=cfg.model.channels_last,
        log=log,
    )
    result = {
        "checkpoint": str(ckpt_path),
        "split": split,
        "data": bundle.describe(),
        "model": cfg.model.name,
        "method": cfg.method,
        "device": str(device),
        "temperature": temperature,
        **res,
        "total_seconds": round(time.perf_counter() - t0, 2),
    }
    where = Path(out_dir) if out_dir is not None else (run_dir if run_dir is not None else ckpt_path.parent)
    if out_dir is None and split == "val":
        where = where / "eval-val"
    title = f"{cfg.method} | {cfg.model.name} | {split}"
    result = write_reports(result, where, title=title)
    result["out_dir"] = str(where)
    return result
