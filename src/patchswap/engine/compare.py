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
entry's per-seed difference to that one (e.g. ce at equal compute).

Each (entry, seed) trains in its own process into ``out/<entry>/s<seed>``. A run with a summary is
finished and skipped; a run with a checkpoint is resumed; so a long study can run in several
pieces (``--max-runs``). A run being trained holds ``compare.lock`` (the trainer's process id) in its
directory, so several ``patchswap compare`` processes on one machine can work through the same study
without training a run twice. ``results.csv`` has one row per run; ``results.md`` the mean +- std per
entry, ranked by validation accuracy (the test column is reported, never used to choose).
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from patchswap.engine.config import ConfigError, load_config
from patchswap.evaluation.plots import pyplot, save_figure

__all__ = ["RunSpec", "Study", "collect", "load_study", "quick_study", "run_study", "write_report"]

# Columns of results.csv, taken from each run's summary.json (and eval.json where present).
METRICS = [
    ("val_acc", ("val", "acc")),
    ("test_acc", ("test", "acc")),
    ("val_nll", ("val", "nll")),
    ("test_nll", ("test", "nll")),
    ("val_ece", ("val", "ece")),
    ("test_ece", ("test", "ece")),
    ("train_seconds", ("train_seconds",)),
    ("images_per_s", ("train_images_per_s",)),
    ("images_seen", ("images_seen",)),
    ("best_epoch", ("best_epoch",)),
]


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
    reference: str | None = None  # an entry the others are compared with seed by seed

    def load_run_config(self, overrides: dict[str, str]) -> Any:
        """The validated config of one run (training or transfer)."""
        if self.command == "transfer":
            from patchswap.engine.transfer import load_transfer_config

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
        reference=None if data.get("reference") is None else str(data["reference"]),
    )
    if study.reference is not None and study.reference not in study.entries:
        raise ConfigError(
            f"{path}: reference {study.reference!r} is not an entry; entries: {sorted(study.entries)}"
        )
    for spec in study.runs():
        try:
            study.load_run_config(spec.overrides)
        except ValueError as e:  # ConfigError, or an unknown method/model name
            raise ConfigError(f"{path}: entry {spec.entry!r}: {e}") from e
    return study


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


def _command(study: Study, spec: RunSpec) -> list[str]:
    cmd = [sys.executable, "-m", "patchswap.cli", study.command]
    if spec.state == "partial":
        cmd += ["--resume", str(spec.run_dir)]
        return cmd
    for cfg in study.base:
        cmd += ["--config", str(cfg)]
    for key, value in spec.overrides.items():
        cmd += ["--method.name" if key == "method" else f"--{key}", value]
    return cmd


LOCK_NAME = "compare.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _lock_holder(lock: Path) -> str | None:
    """Who holds ``lock``: a description, or None when it is stale (its process on this host is gone)."""
    try:
        pid_text, host = lock.read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if host != socket.gethostname():  # another machine sharing the folder: it cannot be checked
        return f"process {pid} on {host} (delete {lock} if that run is dead)"
    return f"process {pid}" if _pid_alive(pid) else None


def _write_lock(lock: Path, pid: int) -> None:
    tmp = lock.with_name(f".{lock.name}.{os.getpid()}")
    tmp.write_text(f"{pid} {socket.gethostname()}\n")
    tmp.replace(lock)


def claim_run(run_dir: Path) -> str | None:
    """Take a run for this process; None on success, else who is training it now. A stale lock (its
    process ended without removing it, e.g. killed) is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                return holder
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        return None
    return "another process (the lock changed hands while claiming it)"


def run_study(
    study: Study, *, jobs: int = 1, max_runs: int | None = None, log=print, progress_bar: bool = False
) -> list[RunSpec]:
    """Train every unfinished run (at most ``max_runs`` this time), ``jobs`` processes at a time."""
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
                (spec.run_dir / LOCK_NAME).unlink(missing_ok=True)
                continue
            action = "resume" if spec.state == "partial" else "train"
            logf = (spec.run_dir / "compare.log").open("a")
            cmd = _command(study, spec)
            if not progress_bar:
                cmd += ["--trainer.progress_bar", "false"]
            log(f"  {action} {spec.entry} seed {spec.seed} -> {spec.run_dir}")
            proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT)
            # The trainer holds the lock: it stays valid if this process is killed and the run goes on.
            _write_lock(spec.run_dir / LOCK_NAME, proc.pid)
            running.append((spec, proc, time.perf_counter(), logf))
        time.sleep(0.2)
        for item in list(running):
            spec, proc, t0, logf = item
            if proc.poll() is None:
                continue
            running.remove(item)
            logf.close()
            (spec.run_dir / LOCK_NAME).unlink(missing_ok=True)
            secs = time.perf_counter() - t0
            if proc.returncode == 0:
                log(f"  done {spec.entry} seed {spec.seed} in {secs:.0f} s")
            else:
                failed.append(spec)
                log(
                    f"  FAILED {spec.entry} seed {spec.seed} (exit {proc.returncode}); "
                    f"see {spec.run_dir / 'compare.log'}"
                )
    if failed:
        raise RuntimeError(
            f"{len(failed)} run(s) failed: " + ", ".join(f"{s.entry}/s{s.seed}" for s in failed)
        )
    return todo


def _get(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def collect(study: Study) -> list[dict[str, Any]]:
    """One row per finished run: entry, seed and the METRICS columns (plus eval.json numbers)."""
    rows = []
    for spec in study.runs():
        summary_path = spec.run_dir / "summary.json"
        if not summary_path.exists():
            continue
        summary = json.loads(summary_path.read_text())
        row: dict[str, Any] = {"entry": spec.entry, "seed": spec.seed}
        score = str(summary.get("selected_on", "val/acc")).split("/")[-1]
        if score != "acc":  # transfer runs: mIoU or mAP take the accuracy columns' place
            row["score"] = score
            summary = {**summary, "val": {**summary["val"], "acc": summary["val"].get(score)}}
            summary["test"] = {**summary["test"], "acc": summary["test"].get(score)}
        for column, keys in METRICS:
            row[column] = _get(summary, keys)
        eval_path = spec.run_dir / "eval.json"
        if eval_path.exists():
            for key, value in _flatten_numbers(json.loads(eval_path.read_text())).items():
                row[f"eval/{key}"] = value
        rows.append(row)
    return rows


def _flatten_numbers(d: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten_numbers(v, f"{prefix}{k}/" if prefix or k else k))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix.rstrip("/")] = float(d)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def _pm(m: float, sd: float, n: int, scale: float, digits: int) -> str:
    """``mean +- std``; a single run has no spread to show, so it is its value alone."""
    if n < 2:
        return f"{scale * m:.{digits}f}"
    return f"{scale * m:.{digits}f} +- {scale * sd:.{digits}f}"


# Columns of the evaluation-suite table (from each run's eval.json, when `patchswap eval --suite` ran).
SUITE_COLUMNS = [
    ("eval/calibration/acc", "clean acc"),
    ("eval/calibration/nll", "NLL"),
    ("eval/calibration/ece", "ECE"),
    ("eval/fgsm/0.00392157", "FGSM 1/255"),
    ("eval/fgsm/0.01", "FGSM 0.01"),
    ("eval/pgd/0.00392157", "PGD-10 1/255"),
    ("eval/corruptions/mean", "corruptions (mean)"),
]


def _suite_table(study: Study, rows: list[dict[str, Any]], ranked: list[str]) -> list[str]:
    """Mean +- std of the evaluation suite's headline numbers, for entries whose runs were evaluated."""
    present = [(key, name) for key, name in SUITE_COLUMNS if any(r.get(key) is not None for r in rows)]
    if not present:
        return []
    images = sorted({int(r["eval/images"]) for r in rows if r.get("eval/images") is not None})
    lines = [
        "",
        "Evaluation suite (`patchswap eval RUN --suite all`; test split, "
        f"{', '.join(map(str, images))} images; accuracies and ECE in %):",
        "",
        "| entry | runs | " + " | ".join(name for _, name in present) + " |",
        "|---|---|" + "---|" * len(present),
    ]
    for entry in ranked:
        mine = [r for r in rows if r["entry"] == entry and any(r.get(k) is not None for k, _ in present)]
        if not mine:
            continue
        cells = []
        for key, name in present:
            vals = [float(r[key]) for r in mine if r.get(key) is not None]
            scale, digits = (1.0, 4) if name == "NLL" else (100.0, 2)
            if vals:
                cells.append(_pm(*_mean_std(vals), len(vals), scale, digits))
            else:
                cells.append("-")
        lines.append(f"| {entry} | {len(mine)} | " + " | ".join(cells) + " |")
    return lines


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (then the normal's 1.96).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)  # fmt: skip


def paired_differences(rows: list[dict[str, Any]], entry: str, reference: str, column: str) -> list[float]:
    """``entry - reference`` in ``column``, seed by seed, over the seeds both have finished.

    Runs of one seed share the initial weights, the data order and the splits, so the per-seed
    difference cancels much of the seed-to-seed spread that the unpaired mean +- std carries.
    """
    ref = {r["seed"]: r.get(column) for r in rows if r["entry"] == reference}
    return [
        float(r[column]) - float(ref[r["seed"]])
        for r in sorted(rows, key=lambda r: r["seed"])
        if r["entry"] == entry and r.get(column) is not None and ref.get(r["seed"]) is not None
    ]


def _paired_table(study: Study, rows: list[dict[str, Any]], ranked: list[str], label: str) -> list[str]:
    reference = study.reference
    if reference is None:
        return []
    lines = [
        "",
        f"Paired with `{reference}` (same seed: same initial weights, data order and splits): the per-seed "
        f"difference in {label} points, mean +- std, its 95% confidence interval (Student's t), and in how "
        "many seeds the entry is ahead.",
        "",
        "| entry | seeds | val diff | val 95% CI | ahead on val | test diff | test 95% CI | ahead on test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in ranked:
        if entry == reference:
            continue
        cells, n = [], 0
        for column in ("val_acc", "test_acc"):
            diffs = [100 * d for d in paired_differences(rows, entry, reference, column)]
            n = max(n, len(diffs))
            if not diffs:
                cells += ["-", "-", "-"]
                continue
            m, sd = _mean_std(diffs)
            ci = "-"
            if len(diffs) > 1:
                dof = len(diffs) - 1
                half = (_T95[dof - 1] if dof <= len(_T95) else 1.96) * sd / math.sqrt(len(diffs))
                ci = f"[{m - half:+.2f}, {m + half:+.2f}]"
            cells += [_pm(m, sd, len(diffs), 1.0, 2), ci, f"{sum(d > 0 for d in diffs)}/{len(diffs)}"]
        if n:
            lines.append(f"| {entry} | {n} | " + " | ".join(cells) + " |")
    return lines


def write_report(study: Study, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """results.csv, results.md (mean +- std per entry, ranked by val accuracy) and results.png."""
    out = study.out
    out.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys or ["entry", "seed"])
        writer.writeheader()
        writer.writerows(rows)

    stats: dict[str, dict[str, tuple[float, float, int]]] = {}
    for name in study.entries:
        mine = [r for r in rows if r["entry"] == name]
        stats[name] = {}
        for column, _ in METRICS:
            vals = [float(r[column]) for r in mine if r.get(column) is not None]
            if vals:
                stats[name][column] = (*_mean_std(vals), len(vals))
    ranked = sorted(stats, key=lambda n: -stats[n].get("val_acc", (float("-inf"), 0, 0))[0])
    score = next((str(r["score"]) for r in rows if r.get("score")), "acc")
    label = {"acc": "acc", "miou": "mIoU", "map": "mAP"}.get(score, score)

    def cell(name: str, column: str, scale: float = 1.0, digits: int = 2) -> str:
        if column not in stats[name]:
            return "-"
        return _pm(*stats[name][column], scale, digits)

    lines = [
        f"# {study.path.stem if study.path.exists() else study.out.name}",
        "",
        f"Seeds {study.seeds}; mean +- sample std over finished seeds (one run: its value). "
        f"Ranked by validation {label} (the test split is reported, never used to choose).",
        "",
        f"| entry | runs | val {label} (%) | test {label} (%) | test NLL | test ECE (%) | train s | images/s "
        "| images seen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ranked:
        n = stats[name].get("val_acc", stats[name].get("test_acc", (0, 0, 0)))[2]
        lines.append(
            f"| {name} | {n} | {cell(name, 'val_acc', 100)} | {cell(name, 'test_acc', 100)} "
            f"| {cell(name, 'test_nll', 1, 4)} | {cell(name, 'test_ece', 100)} "
            f"| {cell(name, 'train_seconds', 1, 1)} "
            f"| {cell(name, 'images_per_s', 1, 0)} | {cell(name, 'images_seen', 1, 0)} |"
        )
    lines += _paired_table(study, rows, ranked, label)
    lines += _suite_table(study, rows, ranked)
    lines += ["", "Overrides per entry:", ""]
    lines += [f"- `{name}`: `{study.entries[name]}`" for name in study.entries]
    (out / "results.md").write_text("\n".join(lines) + "\n")

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(ranked) + 2), 3.8))
    xs = range(len(ranked))
    for offset, column, label in ((-0.2, "val_acc", "val"), (0.2, "test_acc", "test")):
        means = [100 * stats[n].get(column, (math.nan, 0, 0))[0] for n in ranked]
        errs = [100 * stats[n].get(column, (0, 0, 0))[1] for n in ranked]
        ax.bar([x + offset for x in xs], means, width=0.4, yerr=errs, capsize=3, label=label)
    ax.set_xticks(list(xs), ranked, rotation=30, ha="right")
    ax.set_ylabel(f"{label} (%)" if score != "acc" else "accuracy (%)")
    vals = [100 * stats[n][c][0] for n in ranked for c in ("val_acc", "test_acc") if c in stats[n]]
    if vals:
        ax.set_ylim(max(0, min(vals) - 5), min(100, max(vals) + 3))
    ax.legend()
    ax.set_title(f"{study.path.stem if study.path.exists() else study.out.name}: mean +- std over seeds")
    save_figure(fig, out / "results.png")
    return {"csv": out / "results.csv", "md": out / "results.md", "png": out / "results.png"}
