"""Resuming a run safely: which checkpoint, which config, and what a resume may change.

- The checkpoint is ``last.ckpt``; when it is truncated or corrupt the error names the newest intact
  step checkpoint (or ``best.ckpt``) and the ``--from-checkpoint`` flag that resumes from it.
- The config is the one stored in that checkpoint (``config.yaml`` for checkpoints without one), so a
  ``config.yaml`` damaged by hand or by an older version cannot break a resume. Overrides may only
  change :data:`SAFE_ON_RESUME`; any other difference is an error listing every key that differs.
- ``config.yaml`` is rewritten only after the checkpoint has loaded and matched the rebuilt run
  (:func:`check_matches_module`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from patchswap.config_base import apply_mapping
from patchswap.engine.errors import RunError
from patchswap.engine.guard import step_checkpoints
from patchswap.runs import CheckpointError, load_checkpoint

__all__ = [
    "SAFE_ON_RESUME",
    "check_matches_module",
    "check_resume_change",
    "config_differences",
    "resume_config",
    "resume_point",
]

SAFE_ON_RESUME = frozenset(
    {
        "trainer.epochs",
        "trainer.devices",
        "trainer.num_nodes",
        "trainer.accelerator",
        "trainer.strategy",
        "trainer.progress_bar",
        "trainer.log_every_n_steps",
        "trainer.val_every_n_epochs",
        "trainer.checkpoint_every_n_steps",
        "trainer.checkpoint_every_minutes",
        "trainer.keep_last_k",
        "trainer.on_nonfinite",
        "trainer.requeue",
        "trainer.run_dir",
        "data.num_workers",
        "data.eval_batch_size",
        "data.data_dir",
        "data.download",
    }
)
"""Keys an override may change when resuming: more epochs, devices, progress and logging, checkpoint
cadence, where the data lives. Everything else would make the resumed run another run."""


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key -> (saved, new)`` for every dotted key whose value differs."""
    a, b = _flat(saved), _flat(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def resume_config(
    run_dir: Path,
    stored: dict[str, Any] | None,
    overrides: dict[str, str] | None,
    *,
    load: Callable[..., Any],
    command: str,
) -> Any:
    """The config to resume with: the checkpoint's (else config.yaml's), with the safe ``overrides``."""
    if stored is None:
        saved = load([run_dir / "config.yaml"])
    else:
        saved = load(None)
        apply_mapping(saved, stored, "the checkpoint's config")
        saved = saved.resolved()
    base = saved.to_dict()
    cfg = load(None)
    apply_mapping(cfg, base, "the checkpoint's config")
    for key, text in (overrides or {}).items():
        cfg.set(key, text, from_text=True)
    cfg = cfg.resolved()
    cfg.validate()
    check_resume_change(base, cfg, run_dir, command)
    return cfg


def check_resume_change(base: dict[str, Any], cfg: Any, run_dir: Path, command: str) -> None:
    """Refuse a resumed config that differs from the saved ``base`` outside :data:`SAFE_ON_RESUME`, and
    check or announce a change of the run's length."""
    unsafe = {k: v for k, v in config_differences(base, cfg.to_dict()).items() if k not in SAFE_ON_RESUME}
    if "method" in unsafe:  # the two methods' own options differ with it: name the method alone
        sections = tuple(f"{m}." for m in unsafe["method"])
        unsafe = {k: v for k, v in unsafe.items() if not k.startswith(sections)}
    if unsafe:
        lines = "; ".join(f"{k}: saved {a!r}, given {b!r}" for k, (a, b) in unsafe.items())
        raise RunError(
            f"--resume continues the run saved in {run_dir} and cannot change {', '.join(unsafe)} ({lines}). "
            f"A resume may only change {', '.join(sorted(SAFE_ON_RESUME - {'trainer.run_dir'}))}. To train "
            f"with other settings start a new run: patchswap {command} --config {run_dir / 'config.yaml'} "
            "with your flags and another --trainer.run_dir"
        )
    _check_length_change(base, cfg, run_dir, command)


def _check_length_change(base: dict[str, Any], cfg: Any, run_dir: Path, command: str) -> None:
    """More (or fewer) epochs on resume: refused for onecycle, whose total steps are fixed at the start;
    otherwise said out loud, because everything scaled by the run's length follows the new length."""
    saved_trainer = base.get("trainer") or {}
    old, new = saved_trainer.get("epochs"), cfg.trainer.epochs
    schedule = getattr(getattr(cfg, "optim", None), "schedule", None)
    if schedule == "onecycle":  # steps per epoch follow the number of processes
        now = {k: getattr(cfg.trainer, k) for k in ("devices", "num_nodes")}
        moved = [k for k, v in now.items() if saved_trainer.get(k, v) != v]
        if moved:
            key = moved[0]
            raise RunError(
                f"--trainer.{key} {now[key]} on resume: this run uses optim.schedule onecycle, whose total "
                "number of steps was fixed when it started, and another number of processes changes the "
                f"steps per epoch. Resume with trainer.{key} {saved_trainer[key]!r}, or start a new run: "
                f"patchswap {command} --config {run_dir / 'config.yaml'} --trainer.run_dir NEW_DIR"
            )
    if old is None or old == new:
        return
    if schedule == "onecycle":
        raise RunError(
            f"--trainer.epochs {new} on resume: this run uses optim.schedule onecycle, whose total number of "
            f"steps was fixed for {old} epochs when it started, so it cannot be lengthened or shortened. "
            f"Resume without --trainer.epochs, or start a new run: patchswap {command} --config "
            f"{run_dir / 'config.yaml'} --trainer.epochs {new} --trainer.run_dir NEW_DIR"
        )
    what = []
    if schedule == "cosine":
        what.append(f"the cosine learning rate (it jumps to its value at this epoch of a {new}-epoch run)")
    method, options = getattr(cfg, "method", None), getattr(cfg, "method_options", None)
    if method == "pskd":
        what.append("PS-KD's alpha (alpha_T x epoch / epochs)")
    if method == "ips" and getattr(options, "alpha_schedule", "constant") != "constant":
        what.append(f"IPS's alpha_schedule {options.alpha_schedule}")
    if not what:  # nothing in this run is scaled by its length: it simply trains longer (or shorter)
        return
    warnings.warn(
        f"trainer.epochs {old} -> {new} on resume: from the resumed step on, {' and '.join(what)} "
        f"follow{'s' if len(what) == 1 else ''} {new} epochs. The result is not the run a fresh "
        f"{new}-epoch run would give.",
        stacklevel=3,
    )


def _describe(ckpt: dict[str, Any]) -> str:
    return f"epoch {int(ckpt.get('epoch', 0)) + 1}, step {ckpt.get('global_step', '?')}"


def resume_point(
    run_dir: Path, from_checkpoint: str | Path | None, *, command: str
) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume from and its contents, with a full-sentence error when it is unusable."""
    ckpt_dir = run_dir / "checkpoints"
    if from_checkpoint is not None:
        path = Path(from_checkpoint)
        if not path.is_file() and (ckpt_dir / path).is_file():
            path = ckpt_dir / path
        if not path.is_file():
            names = ", ".join(p.name for p in sorted(ckpt_dir.glob("*.ckpt"))) or "none"
            raise RunError(
                f"--from-checkpoint {from_checkpoint}: no such checkpoint (in {ckpt_dir}: {names})"
            )
        return path, load_checkpoint(path)
    last = ckpt_dir / "last.ckpt"
    if not last.exists():
        raise RunError(
            f"nothing to resume in {run_dir}: no checkpoints/last.ckpt (the run stopped before its first "
            f"checkpoint); start it again with: patchswap {command} --config {run_dir / 'config.yaml'} "
            "--overwrite"
        )
    try:
        return last, load_checkpoint(last)
    except CheckpointError as e:
        cause = e.__cause__
        why = f" ({type(cause).__name__}: {str(cause)[:160]})" if cause is not None else ""
        for candidate in [*step_checkpoints(ckpt_dir), ckpt_dir / "best.ckpt"]:
            if not candidate.is_file() or (last.exists() and candidate.samefile(last)):
                continue
            try:
                ckpt = load_checkpoint(candidate)
            except CheckpointError:
                continue
            raise CheckpointError(
                f"The last checkpoint {last} is corrupt or truncated{why}, "
                "so the run cannot continue from it. "
                f"The newest intact checkpoint is {candidate.name} ({_describe(ckpt)}): "
                "continue from it with "
                f"`patchswap {command} --resume {run_dir} --from-checkpoint {candidate.name}`."
            ) from None
        raise CheckpointError(
            f"The last checkpoint {last} is corrupt or truncated{why}, "
            "and no other intact checkpoint is left in "
            f"{ckpt_dir}. Start the run again with: patchswap {command} --config {run_dir / 'config.yaml'} "
            "--overwrite"
        ) from None


def check_matches_module(path: Path, module: torch.nn.Module) -> None:
    """Fail, naming the first differences, when the checkpoint's network does not fit ``module``'s."""
    saved = {k: v for k, v in load_checkpoint(path)["state_dict"].items() if k.startswith("model.")}
    mine = {k: v for k, v in module.state_dict().items() if k.startswith("model.")}
    missing = [k for k in mine if k not in saved]
    extra = [k for k in saved if k not in mine]
    shapes = [
        k for k in mine if k in saved and getattr(saved[k], "shape", None) != getattr(mine[k], "shape", None)
    ]
    if missing or extra or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", extra), ("of another shape", shapes)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise RunError(
            f"the checkpoint {path} does not fit the run rebuilt from its config: "
            f"weights {'; '.join(parts)}. "
            "It was written by another model or another version of patchswap"
        )
