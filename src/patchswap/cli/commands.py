"""What each subcommand does once parsed: call the engine, the studies or deploy, and print.

Parsing lives in :mod:`patchswap.cli.parser`; the work itself in the layers below.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from patchswap.cli.flags import ALIASES, COMPARE_ALIASES

__all__ = ["COMMANDS"]


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    return {k.removeprefix("cfg:"): v for k, v in vars(args).items() if k.startswith("cfg:")}


def _print_summary(summary: dict[str, Any]) -> None:
    def pct(d: dict[str, float], k: str) -> str:
        return f"{100 * d[k]:.2f}%" if k in d else "-"

    print()
    print(f"run        {summary['run_dir']}")
    print(f"data       {summary['data']}")
    print(f"method     {summary['method']} | model {summary['model']} | seed {summary['seed']}")
    print(
        f"epochs     {summary['epochs_run']} "
        f"(best epoch {summary['best_epoch']}, selected on {summary['selected_on']})"
    )
    for split in ("val", "test"):
        m = summary[split]
        if m:
            print(
                f"{split:<10} acc {pct(m, 'acc')} | NLL {m.get('nll', float('nan')):.4f} "
                f"| ECE {pct(m, 'ece')}"
            )
    print(
        f"speed      {summary['train_images_per_s']} images/s over {summary['train_seconds']} s of training"
    )
    print(f"files      {summary['run_dir']}/summary.json, metrics.csv, curves.png, checkpoints/")


def cmd_train(args: argparse.Namespace) -> int:
    from patchswap.engine import resume, train
    from patchswap.engine.config import load_config

    overrides = _overrides(args)
    if args.resume:
        if args.config:
            raise ValueError("--resume uses the config saved in the run directory; drop --config")
        summary = resume(args.resume, overrides, from_checkpoint=args.from_checkpoint)
    else:
        summary = train(load_config(args.config, overrides), overwrite=args.overwrite)
    if summary:
        _print_summary(summary)
    return 0


_SUITE_FLAGS = ("eps", "pgd_steps", "corruptions", "severities", "max_images", "seed", "out")


def cmd_eval(args: argparse.Namespace) -> int:
    from patchswap.engine import evaluate
    from patchswap.engine.harness import keep_freed_memory

    overrides = parse_sets(args.set)
    if not args.suite:
        given = [f"--{f.replace('_', '-')}" for f in _SUITE_FLAGS if getattr(args, f) is not None]
        if given:
            raise SystemExit(f"{', '.join(given)} only apply with --suite (e.g. --suite all)")
        print(json.dumps(evaluate(args.target, split=args.split, overrides=overrides), indent=2))
        return 0

    from patchswap.evaluation.suite import SuiteOptions

    keep_freed_memory()
    opts: dict[str, Any] = {"parts": args.suite}
    for flag in ("eps", "pgd_steps", "corruptions", "severities", "max_images", "seed"):
        if getattr(args, flag) is not None:
            opts[flag] = getattr(args, flag)
    options = SuiteOptions(**opts)

    def log(text: str) -> None:
        print(f"[eval] {text}", file=sys.stderr, flush=True)

    result = evaluate(
        args.target,
        split=args.split,
        overrides=overrides,
        suite=args.suite,
        options=options,
        out_dir=args.out,
        log=log,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "reliability"}, indent=2))
    where = Path(result["out_dir"])
    files = [p.name for p in sorted(where.glob("*")) if p.name in _REPORT_NAMES]
    log(f"wrote {', '.join(files)} in {where}")
    return 0


_REPORT_NAMES = {"eval.json", "eval.md", "reliability.png", "adversarial.png", "corruptions.png"}


def cmd_transfer(args: argparse.Namespace) -> int:
    from patchswap.engine import (
        evaluate_transfer,
        load_transfer_config,
        resume_transfer,
        train_transfer,
    )

    overrides = _overrides(args)
    if args.eval:
        res = evaluate_transfer(args.eval, split=args.split)
        print(json.dumps(res, indent=2))
        return 0
    if args.resume:
        if args.config:
            raise ValueError("--resume uses the config saved in the run directory; drop --config")
        summary = resume_transfer(args.resume, overrides)
    else:
        summary = train_transfer(load_transfer_config(args.config, overrides), overwrite=args.overwrite)
    if summary:
        score = summary["selected_on"].split("/")[1]
        for split in ("val", "test"):
            value = summary[split].get(score)
            if value is not None:
                print(f"{split:<6} {score} {100 * value:.2f}%")
        print(f"files  {summary['run_dir']}/summary.json, metrics.csv, curves.png, checkpoints/")
    return 0


def cmd_show_pairs(args: argparse.Namespace) -> int:
    from patchswap.engine.config import load_config
    from patchswap.engine.show_pairs import draw_pairs

    cfg = load_config(args.config, _overrides(args))
    pic = draw_pairs(cfg, pairs=args.pairs, out=args.out, scale=args.scale)
    rows = "anchors, partners, swapped anchors, swapped partners"
    print(f"wrote {pic.path}: rows = {rows}; classes {pic.classes} (both labelled in the picture)")
    print(f"swapped share of each pair: {pic.fractions}")
    return 0


def parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    from patchswap.study.compare import load_study, quick_study, restrict, run_study, with_reference
    from patchswap.study.report import collect, write_report

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else None
    if args.study:
        short = [f for f in COMPARE_ALIASES if f"cfg:{ALIASES[f]}" in vars(args)]
        if short:
            raise SystemExit(
                f"{', '.join(short)} apply to the quick form (--methods); a study file sets them "
                "under set: (every run) or an entry"
            )
        study = load_study(args.study)
        to_run = restrict(study, [e for e in (args.entries or "").split(",") if e.strip()], seeds)
    elif args.methods:
        methods = [m for m in args.methods.split(",") if m]
        sets = {**_overrides(args), **parse_sets(args.set)}
        study = quick_study(args.config, methods, seeds or [0, 1, 2], args.out, sets)
        to_run = study
    else:
        raise SystemExit("give a study file or --methods (see patchswap compare --help)")
    if args.reference:
        study = with_reference(study, args.reference)
    if not args.report_only:
        run_study(to_run, jobs=args.jobs, max_runs=args.max_runs)
    rows = collect(study)
    files = write_report(study, rows)
    print(files["md"].read_text())
    print(f"wrote {files['csv']}, {files['md']}, {files['png']}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from patchswap.deploy import calibrate, format_calibration

    print(format_calibration(calibrate(args.target, device=args.device, batch_size=args.batch_size)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from patchswap.deploy import format_predictions, load_run, load_temperature, predict, write_predictions

    run = load_run(args.target, device=args.device, need_data=False)  # new files: no split needed
    temperature = None if args.no_calibration else load_temperature(run.checkpoint)
    preds = predict(run, args.paths, top_k=args.top_k, batch_size=args.batch_size, temperature=temperature)
    bad = sum(p.error is not None for p in preds)
    if args.out:
        meta = {"checkpoint": str(run.checkpoint), "temperature": temperature, "top_k": args.top_k}
        out = write_predictions(preds, args.out, meta=meta)
        print(f"wrote {out}: {len(preds) - bad} predicted, {bad} unreadable")
    else:
        print(format_predictions(preds))
    calibrated = f"calibrated, T = {temperature:.4f}" if temperature else "not calibrated"
    print(f"probabilities {calibrated}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from patchswap.deploy import export, format_export

    report = export(
        args.target, args.fmt, out=args.out, quantize=args.quantize, latency_runs=args.latency_runs
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_export(report))
    return 0 if report.verified else 1


# subcommand -> its handler
COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "show-pairs": cmd_show_pairs,
    "compare": cmd_compare,
    "transfer": cmd_transfer,
    "calibrate": cmd_calibrate,
    "predict": cmd_predict,
    "export": cmd_export,
}
