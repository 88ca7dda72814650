"""``patchswap compare``: a grid of methods (or variants) x seeds, run in resumable pieces, then a table.

A study is a YAML file::

    base: configs/cifar10-cpu-small.yaml      # a config file (path relative to the study), optional
    set: {trainer.epochs: 15}                 # overrides applied to every run, optional
    seeds: [0, 1, 2]
    out: runs/study                           # where run directories go (relative to the study file)
    entries:                                  # name -> overrides (section.key: value)
      ce: {method: ce}
      ce-2x-epochs: {method: ce, trainer.epochs: 30}
      ips: {method: ips}
      ips-no-swap: {method: ips, ips.prob: 0}

``command: transfer`` makes every run a ``patchswap transfer`` (segmentation or detection) instead of
a ``patchswap train``; its score is then mIoU or mAP. ``{seed}`` in a value is replaced by the run's
seed, so a transfer entry can take the backbone trained with the same seed
(``model.backbone: runs/backbones/ips/s{seed}``). ``reference: ENTRY`` adds a table of every other
entry's per-seed difference to that one (e.g. ce at equal compute); ``reference: [A, B]`` a table
for each (e.g. ce at equal compute, then ce at equal epochs).

Each (entry, seed) trains in its own process into ``out/<entry>/s<seed>``. A run with a summary is
finished and skipped; a run with a checkpoint is resumed; so a long study can run in several
pieces (``--max-runs``). The process runs :mod:`patchswap.study.worker`, which calls the engine's
Python API (no command-line flags are spelled here). A run being trained holds ``compare.lock`` (the
trainer's process id) in its directory, so several ``patchswap compare`` processes on one machine can
work through the same study without training a run twice (:mod:`patchswap.study.locks`). While runs
train, a status line every ``status_every`` seconds says which runs are training, at which epoch (read
from their metrics.csv), and the study's progress: runs done / total and an estimate of the time left.
The tables are written by :mod:`patchswap.study.report`.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from patchswap.engine.config import ConfigError, load_config
from patchswap.engine.errors import EXIT_STOPPED
from patchswap.study.locks import claim_run, hand_over, release
from patchswap.study.worker import Job

__all__ = ["RunSpec", "Study", "load_study", "quick_study", "restrict", "job", "run_study"]


@dataclass
class RunSpec:
    entry: str
    seed: int
    run_dir: Path
    overrides: dict[str, str]

    @property
    def state(self) -> str:
        if (self.run_dir / "summary.json").exists():
            return "done"
        if (self.run_dir / "checkpoints" / "last.ckpt").exists():
            return "partial"
        return "new"


@dataclass
class Study:
    path: Path
    base: list[Path]
    common: dict[str, str]
    seeds: list[int]
    out: Path
    entries: dict[str, dict[str, str]]
    command: str = "train"
    references: tuple[str, ...] = ()  # entries the others are compared with seed by seed, a table each

    @property
    def reference(self) -> str | None:
        """The first reference entry (the main comparison), or None."""
        return self.references[0] if self.references else None

    def load_run_config(self, overrides: dict[str, str]) -> Any:
        """The validated config of one run (training or transfer)."""
        if self.command == "transfer":
            from patchswap.engine import load_transfer_config

            return load_transfer_config(self.base, overrides)
        return load_config(self.base, overrides)

    def runs(self) -> list[RunSpec]:
        specs = []
        for seed in self.seeds:  # seed-major: an interrupted study has every entry at seed 0 first
            for name, extra in self.entries.items():
                run_dir = self.out / name / f"s{seed}"
                merged = {**self.common, **extra}
                overrides = {
                    **{k: v.replace("{seed}", str(seed)) for k, v in merged.items()},
                    "trainer.seed": str(seed),
                    "trainer.run_dir": str(run_dir),
                }
                specs.append(RunSpec(name, seed, run_dir, overrides))
        return specs


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def _flat(mapping: Any, where: str) -> dict[str, str]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping of section.key: value, got {mapping!r}")
    out: dict[str, str] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):  # nested form {ips: {prob: 0.5}}
            for sub, v in _flat(value, where).items():
                out[f"{key}.{sub}"] = v
        else:
            out[str(key)] = _text(value)
    return out


def quick_study(
    configs: list[str], methods: list[str], seeds: list[int], out: str | Path, common: dict[str, str]
) -> Study:
    """A study from command-line flags: one entry per method, no file needed."""
    study = Study(
        path=Path(out) / "study.yaml",
        base=[Path(c) for c in configs],
        common=dict(common),
        seeds=seeds,
        out=Path(out),
        entries={m: {"method": m} for m in methods},
    )
    for spec in study.runs():
        load_config(study.base, spec.overrides)
    return study


def load_study(path: str | Path) -> Study:
    """Read and check a study file: every run's config must load before anything trains."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    valid = ("base", "set", "seeds", "out", "entries", "command", "reference")
    unknown = set(data) - set(valid)
    if unknown:
        raise ConfigError(f"{path}: unknown study keys {sorted(unknown)}; valid: {', '.join(valid)}")
    command = data.get("command", "train")
    if command not in ("train", "transfer"):
        raise ConfigError(f"{path}: command must be train or transfer, got {command!r}")
    here = path.parent
    base = data.get("base") or []
    base_paths = [here / b for b in ([base] if isinstance(base, str) else base)]
    seeds = data.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{path}: seeds must be a list of integers, got {seeds!r}")
    entries = data.get("entries")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{path}: entries must map names to overrides, e.g. {{ce: {{method: ce}}}}")
    study = Study(
        path=path,
        base=base_paths,
        common=_flat(data.get("set"), "set"),
        seeds=seeds,
        out=here / data.get("out", f"runs/{path.stem}"),
        entries={str(k): _flat(v, f"entries.{k}") for k, v in entries.items()},
        command=command,
    )
    if data.get("reference") is not None:
        ref = data["reference"]
        study = with_reference(study, [str(r) for r in ref] if isinstance(ref, list) else str(ref))
    for spec in study.runs():
        try:
            study.load_run_config(spec.overrides)
        except ValueError as e:  # ConfigError, or an unknown method/model name
            raise ConfigError(f"{path}: entry {spec.entry!r}: {e}") from e
    return study


def with_reference(study: Study, reference: str | list[str]) -> Study:
    """The study with ``reference`` as the entry every other entry is paired with, seed by seed; a list
    (or ``"a,b"``) gives one paired table per entry, e.g. ce at equal compute and ce at equal epochs."""
    names = reference if isinstance(reference, list) else [r.strip() for r in reference.split(",")]
    names = [n for n in names if n]
    for name in names:
        if name not in study.entries:
            raise ConfigError(
                f"{study.path}: reference {name!r} is not an entry; entries: {sorted(study.entries)}"
            )
    return replace(study, references=tuple(names))


def restrict(study: Study, entries: list[str] | None = None, seeds: list[int] | None = None) -> Study:
    """The same study cut down to some entries (in the given order) and seeds, to run the runs that
    matter most first; the report still reads the whole study."""
    if entries:
        unknown = [e for e in entries if e not in study.entries]
        if unknown:
            raise ConfigError(
                f"{study.path}: no entries {unknown} in this study; it has {sorted(study.entries)}"
            )
        study = replace(study, entries={e: study.entries[e] for e in entries})
    if seeds:
        unknown_seeds = [s for s in seeds if s not in study.seeds]
        if unknown_seeds:
            raise ConfigError(f"{study.path}: seeds {unknown_seeds} are not in its seeds {study.seeds}")
        study = replace(study, seeds=list(seeds))
    return study


def job(study: Study, spec: RunSpec, *, progress_bar: bool = False) -> Job:
    """The worker's job for one run: resume a partial run, else train it from the study's config."""
    quiet = {} if progress_bar else {"trainer.progress_bar": "false"}
    if spec.state == "partial":
        return Job(study.command, resume=str(spec.run_dir), overrides=quiet)
    return Job(study.command, configs=[str(c) for c in study.base], overrides={**spec.overrides, **quiet})


def epochs_done(run_dir: Path) -> int:
    """Epochs a run has finished: the rows of its metrics.csv (one per epoch; 0 before the first)."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return 0
    try:
        with path.open(newline="") as f:
            return sum(1 for _ in csv.DictReader(f))
    except (OSError, csv.Error):  # being written: the next status line reads it again
        return 0


def _clock(seconds: float) -> str:
    m = int(round(seconds / 60))
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{max(m, 1)} min"


def status_line(
    running: list[tuple[RunSpec, float, int, int]],
    *,
    done: int,
    total: int,
    queued: int,
    run_seconds: list[float],
    jobs: int,
    now: float,
) -> str:
    """One line of a study's progress: each running run with its epoch, runs done / total, and the
    time left. ``running`` holds ``(spec, start time, its epochs, epochs it had done when it
    started)`` (a resumed run has some). A running run's remaining epochs go at its own pace; the
    queued runs take the mean time of the runs finished so far (else the running runs' pace),
    ``jobs`` at a time."""
    parts, left, paces = [], 0.0, []
    for spec, start, epochs, before in running:
        finished = epochs_done(spec.run_dir)
        parts.append(f"{spec.entry} seed {spec.seed} epoch {min(finished + 1, epochs)}/{epochs}")
        if finished > before:
            per_epoch = (now - start) / (finished - before)
            paces.append(per_epoch * epochs)
            left += per_epoch * (epochs - finished)
    per_run = (
        sum(run_seconds) / len(run_seconds) if run_seconds else (sum(paces) / len(paces) if paces else None)
    )
    text = f"[{done}/{total} runs done] training: {', '.join(parts) or 'nothing'}"
    if per_run is None:
        return text + " | time left: after the first epoch"
    left = (left + queued * per_run) / max(1, min(jobs, len(running) + queued))
    return text + f" | about {_clock(left)} left"


def run_study(
    study: Study,
    *,
    jobs: int = 1,
    max_runs: int | None = None,
    log=print,
    progress_bar: bool = False,
    status_every: float = 60.0,
) -> list[RunSpec]:
    """Train every unfinished run (at most ``max_runs`` this time), ``jobs`` processes at a time,
    logging a status line (see :func:`status_line`) every ``status_every`` seconds."""
    todo = [s for s in study.runs() if s.state != "done"]
    if max_runs is not None:
        todo = todo[:max_runs]
    done = len(study.runs()) - len([s for s in study.runs() if s.state != "done"])
    log(f"study {study.path.name}: {len(study.runs())} runs, {done} done, {len(todo)} to run now")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))
    running: list[tuple[RunSpec, subprocess.Popen, float, Any]] = []
    queue = list(todo)
    failed: list[RunSpec] = []
    total, run_seconds, last_status = len(study.runs()), [], time.perf_counter()
    epochs: dict[Path, tuple[int, int]] = {}  # each started run's trainer.epochs, epochs done before
    while queue or running:
        while queue and len(running) < jobs:
            spec = queue.pop(0)
            if spec.state == "done":  # finished meanwhile (another process, or copied in)
                continue
            holder = claim_run(spec.run_dir)
            if holder is not None:
                log(f"  skip {spec.entry} seed {spec.seed}: being trained by {holder}")
                continue
            if spec.state == "done":  # finished between the check and the claim
                release(spec.run_dir)
                continue
            action = "resume" if spec.state == "partial" else "train"
            logf = (spec.run_dir / "compare.log").open("a")
            spec_json = job(study, spec, progress_bar=progress_bar).to_json()
            cmd = [sys.executable, "-m", "patchswap.study.worker", spec_json]
            log(f"  {action} {spec.entry} seed {spec.seed} -> {spec.run_dir}")
            proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT)
            # The trainer holds the lock: it stays valid if this process is killed and the run goes on.
            hand_over(spec.run_dir, proc.pid)
            running.append((spec, proc, time.perf_counter(), logf))
            cfg_epochs = study.load_run_config(spec.overrides).trainer.epochs
            epochs[spec.run_dir] = (cfg_epochs, epochs_done(spec.run_dir))
        time.sleep(0.2)
        if running and time.perf_counter() - last_status >= status_every:
            last_status = time.perf_counter()
            log(
                "  "
                + status_line(
                    [(spec, t0, *epochs[spec.run_dir]) for spec, _, t0, _ in running],
                    done=done,
                    total=total,
                    queued=len(queue),
                    run_seconds=run_seconds,
                    jobs=jobs,
                    now=last_status,
                )
            )
        for item in list(running):
            spec, proc, t0, logf = item
            if proc.poll() is None:
                continue
            running.remove(item)
            logf.close()
            release(spec.run_dir)
            secs = time.perf_counter() - t0
            if proc.returncode == 0:
                done += 1
                run_seconds.append(secs)
                log(f"  done {spec.entry} seed {spec.seed} in {secs:.0f} s ({done}/{total} runs done)")
            elif proc.returncode == EXIT_STOPPED:  # stopped by a signal after writing its checkpoint
                failed.append(spec)
                log(f"  stopped {spec.entry} seed {spec.seed} at a checkpoint: the same compare resumes it")
            else:
                failed.append(spec)
                log(
                    f"  FAILED {spec.entry} seed {spec.seed} (exit {proc.returncode}); "
                    f"see {spec.run_dir / 'compare.log'}"
                )
    if failed:
        raise RuntimeError(
            f"{len(failed)} run(s) failed or were stopped: "
            + ", ".join(f"{s.entry}/s{s.seed}" for s in failed)
            + "; rerun the same compare to resume the stopped ones"
        )
    return todo
