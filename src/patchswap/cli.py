"""``patchswap`` command line: train | eval | show-pairs.

Every config key is a flag (``--section.key VALUE``, e.g. ``--optim.lr 0.1 --ips.prob 0.25``) whose
help shows its default; ``--config FILE`` loads YAML first and flags override it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["build_parser", "main"]

# Short flags for the options people type most; each maps to a config key.
ALIASES = {
    "--data": "data.name",
    "--data-dir": "data.data_dir",
    "--download": "data.download",
    "--val-split": "data.val_split",
    "--batch-size": "data.batch_size",
    "--model": "model.name",
    "--method": "method",
    "--epochs": "trainer.epochs",
    "--seed": "trainer.seed",
    "--lr": "optim.lr",
    "--run-dir": "trainer.run_dir",
    "--accelerator": "trainer.accelerator",
    "--devices": "trainer.devices",
    "--precision": "trainer.precision",
}
BOOL_FLAGS = {"--download"}
# compare's quick form takes the short forms of keys that every run shares (not the run's own
# seed, method or directory: --seeds, --methods and --out say those).
COMPARE_ALIASES = tuple(f for f in ALIASES if f not in ("--method", "--seed", "--run-dir"))


class _Parser(argparse.ArgumentParser):
    """argparse, but an unrecognised flag is reported by its command's parser with the closest valid
    flag, as an unknown YAML key is (``--optim.lrr`` -> did you mean '--optim.lr'?)."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            target = self._command_parser(parsed) or self
            target.error(unrecognized(extras, target))
        return parsed

    def error(self, message: str) -> NoReturn:
        """The error after the usage, in one line when the full usage is long (a command's lists
        every config key)."""
        usage = self.format_usage()
        if len(usage) > 400:
            usage = f"usage: {self.prog} [options] (see {self.prog} --help)\n"
        self.exit(2, f"{usage}{self.prog}: error: {message}\n")

    def _command_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(parsed, action.dest, None))
        return None


def unrecognized(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """``unrecognized arguments: ...`` with the closest valid flag of each unknown one."""
    from patchswap.config_base import did_you_mean

    flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    unknown = [arg.split("=", 1)[0] for arg in extras if arg.startswith("--")]
    hints = {name: did_you_mean(name, flags) for name in unknown}
    text = f"unrecognized arguments: {' '.join(extras)}"
    if len(unknown) == 1 and hints[unknown[0]]:
        return text + hints[unknown[0]]
    said = [f"{name}: {hint.strip()[1:-1]}" for name, hint in hints.items() if hint]
    return text + (f" ({'; '.join(said)})" if said else "") + f"; see {parser.prog} --help"


def _field_help(cls: type) -> dict[str, str]:
    """Field name -> its help text (the ``help`` in its metadata): one place documents a key for YAML,
    the flags and --help."""
    import dataclasses

    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}


def _shown(default: Any) -> Any:
    """A default as it is typed on the command line (lists comma-separated)."""
    return ",".join(map(str, default)) if isinstance(default, list) else default


def _type_name(tp: Any) -> str:
    if tp is dict or getattr(tp, "__origin__", None) is dict:
        return "K=V,..."
    return re.sub(r"\btyping\.|<class '(\w+)'>", lambda m: m.group(1) or "", str(tp))


def _add_config_flags(parser: argparse.ArgumentParser, factory: Any = None) -> None:
    """--config plus one --section.key flag per config field (RunConfig, or ``factory``'s class)."""
    import dataclasses

    from patchswap.engine.config import RunConfig, section_fields

    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable)"
    )
    defaults = (factory or RunConfig)()
    _add_aliases(parser, defaults)
    group = parser.add_argument_group("choices")
    for key, text in defaults.top_level_help().items():
        group.add_argument(
            _choice_flag(key),
            dest=f"cfg:{key}",
            default=argparse.SUPPRESS,
            metavar="NAME",
            help=f"{text} (default: {getattr(defaults, key)})",
        )
    for name, (default_obj, title) in defaults.flag_sections().items():
        cls = type(default_obj)
        group = parser.add_argument_group(title)
        helps = _field_help(cls)
        types = section_fields(cls)
        for f in dataclasses.fields(cls):
            text = helps[f.name]
            shown = _shown(getattr(default_obj, f.name))
            group.add_argument(
                f"--{name}.{f.name}",
                dest=f"cfg:{name}.{f.name}",
                default=argparse.SUPPRESS,
                metavar=_type_name(types[f.name]).replace(" ", ""),
                help=f"{text} (default: {shown})" if text else f"(default: {shown})",
            )


def _choice_flag(key: str) -> str:
    """The flag of a top-level choice: ``--method.name`` (``--method`` is its short form), ``--task``."""
    return f"--{key}.name" if key == "method" else f"--{key}"


def _add_aliases(parser: argparse.ArgumentParser, defaults: Any, flags: Any = None) -> None:
    """The short forms in ALIASES (or those of ``flags``) whose key ``defaults``'s config has, each
    documented with the help and default of the key it sets."""
    short = parser.add_argument_group("common options (short forms of config keys)")
    choices = defaults.top_level_help()
    sections = defaults.sections()
    for flag in flags or ALIASES:
        key = ALIASES[flag]
        section, _, name = key.partition(".")
        if key in choices:
            target, text, default = _choice_flag(key), choices[key], getattr(defaults, key)
        elif section in sections and hasattr(sections[section], name):
            target = f"--{key}"
            text = _field_help(type(sections[section]))[name]
            default = _shown(getattr(sections[section], name))
        else:  # this config has no such key (transfer has no model.name): no short form
            continue
        if flag in BOOL_FLAGS:  # a switch: --download alone means true
            short.add_argument(
                flag,
                dest=f"cfg:{key}",
                action="store_const",
                const="true",
                default=argparse.SUPPRESS,
                help=f"= {target} true: {text}",
            )
        else:
            short.add_argument(
                flag,
                dest=f"cfg:{key}",
                default=argparse.SUPPRESS,
                metavar="V",
                help=f"= {target}: {text} (default: {default})",
            )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="patchswap",
        description="Teacher-free self-distillation with Intra-class Patch Swap (IPS).",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train a model (default: IPS on the embedded digits data)",
        description="Train a model. Flags override --config files; the run dir keeps the resolved config.",
        allow_abbrev=False,
    )
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a killed or finished run from its last checkpoint"
    )
    train.add_argument(
        "--from-checkpoint",
        metavar="NAME",
        help="with --resume: continue from this checkpoint (e.g. best.ckpt)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --trainer.run_dir"
    )
    _add_config_flags(train)

    ev = sub.add_parser(
        "eval",
        help="evaluate a run directory or checkpoint (accuracy, NLL, ECE; --suite for robustness)",
        description=(
            "Evaluate a checkpoint on its run's test (or val) split, using the config saved in it. "
            "With --suite: calibration (NLL, ECE, AURC, E-AURC, Brier, reliability diagram), FGSM and "
            "PGD accuracy per eps, and the 15 CIFAR-10-C corruptions at 5 severities, written to "
            "eval.json, eval.md and plots in the run directory."
        ),
        allow_abbrev=False,
    )
    ev.add_argument("target", metavar="RUN_DIR_or_CHECKPOINT")
    ev.add_argument("--split", choices=["test", "val"], default="test", help="which split (default: test)")
    ev.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. data.data_dir=/data or data.eval_batch_size=1024",
    )
    suite = ev.add_argument_group("evaluation suite")
    suite.add_argument(
        "--suite",
        metavar="PARTS",
        help="all, or a comma list of calibration, fgsm, pgd, corruptions (default: plain accuracy/NLL/ECE)",
    )
    suite.add_argument(
        "--eps",
        default=None,
        metavar="LIST",
        help="L-inf eps in [0, 1] pixel units for fgsm and pgd (default: 0,1/255,2/255,4/255,8/255,0.01)",
    )
    suite.add_argument("--pgd-steps", type=int, default=None, metavar="K", help="PGD steps (default: 10)")
    suite.add_argument(
        "--corruptions", default=None, metavar="LIST", help="all, or a comma list (default: all)"
    )
    suite.add_argument(
        "--severities", default=None, metavar="LIST", help="corruption severities (default: 1,2,3,4,5)"
    )
    suite.add_argument(
        "--max-images",
        type=int,
        default=None,
        metavar="N",
        help="evaluate a seeded random subset of N images",
    )
    suite.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seeds PGD starts, corruptions and the --max-images subset (default: 0)",
    )
    suite.add_argument(
        "--out", default=None, metavar="DIR", help="where to write (default: the run directory)"
    )

    cmp = sub.add_parser(
        "compare",
        help="run a grid of methods x seeds (resumable) and tabulate mean +- std",
        description=(
            "Run every (entry, seed) of a study in its own process, skipping finished runs and resuming "
            "unfinished ones, then write results.csv, results.md and results.png. A study is a YAML file "
            "(see patchswap.engine.compare) or the quick form --methods/--seeds/--config."
        ),
        allow_abbrev=False,
    )
    cmp.add_argument("study", nargs="?", help="study YAML file")
    cmp.add_argument("--methods", help="quick form: comma-separated methods, e.g. ce,ips")
    cmp.add_argument(
        "--seeds",
        help="comma-separated seeds: the quick form's seeds (default: 0,1,2), or which of a study's to run",
    )
    cmp.add_argument(
        "--entries", help="run only these entries of the study, in this order (the report covers all)"
    )
    cmp.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="quick form: base YAML config"
    )
    cmp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="quick form: override for all runs"
    )
    cmp.add_argument(
        "--out", default="runs/compare", help="quick form: output folder (default: runs/compare)"
    )
    cmp.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default: 1)")
    cmp.add_argument(
        "--max-runs", type=int, default=None, help="train at most this many runs now (resumable pieces)"
    )
    cmp.add_argument("--report-only", action="store_true", help="only tabulate the finished runs")
    cmp.add_argument(
        "--reference", help="entry the others are compared with seed by seed (overrides the study's)"
    )
    from patchswap.engine.config import RunConfig

    _add_aliases(cmp, RunConfig(), COMPARE_ALIASES)  # quick form: = --set KEY=VALUE for all runs

    transfer = sub.add_parser(
        "transfer",
        help="fine-tune a trained backbone on segmentation or detection (ce, or dense ips)",
        description=(
            "Transfer a backbone (a patchswap run dir or checkpoint, or a model name for random init) to "
            "torchvision's DeepLabV3/FCN (--task segment) or Faster R-CNN/RetinaNet (--task detect), "
            "fine-tuned with ce or dense IPS. Default data: MNIST digit scenes from ../shared/data."
        ),
        allow_abbrev=False,
    )
    transfer.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or finished transfer run")
    transfer.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --trainer.run_dir"
    )
    transfer.add_argument(
        "--eval", metavar="RUN", help="evaluate a transfer run dir or checkpoint instead of training"
    )
    transfer.add_argument("--split", choices=("val", "test"), default="test", help="split for --eval")
    from patchswap.engine.transfer_config import TransferConfig

    _add_config_flags(transfer, TransferConfig)

    show = sub.add_parser(
        "show-pairs",
        help="write a PNG of same-class pairs and their swapped versions",
        description=(
            "Rows: anchors, partners, swapped anchors, swapped partners, labelled in the picture with "
            "each column's class (data, ips options apply)."
        ),
        allow_abbrev=False,
    )
    show.add_argument("--pairs", type=int, default=8, help="how many pairs to show (default: 8)")
    show.add_argument("--out", default="pairs.png", help="output PNG (default: pairs.png)")
    show.add_argument("--scale", type=int, default=0, help="upscale factor for small images (default: auto)")
    _add_config_flags(show)

    cal = sub.add_parser(
        "calibrate",
        help="fit a temperature on the validation split and store it in the run (eval, predict use it)",
        description=(
            "Fit one temperature T on the run's validation split by minimising NLL (softmax(logits / T)), "
            "store it as RUN/calibration.json, and print NLL and ECE on val and test before and after "
            "(test is reported only, never used to fit). eval and predict apply it when present."
        ),
        allow_abbrev=False,
    )
    cal.add_argument("target", metavar="RUN_DIR_or_CHECKPOINT")
    cal.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default: 256)")
    cal.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, ... (default: auto)"
    )

    pred = sub.add_parser(
        "predict",
        help="top-k classes with (calibrated) probabilities for image files and folders",
        description=(
            "Classify image files (folders are searched recursively for common image extensions) with the "
            "run's eval transform and normalisation, in batches. Probabilities are calibrated when "
            "`patchswap calibrate` stored a temperature. An unreadable file becomes a row with its error; "
            "the others still run. Without --out, prints a table."
        ),
        allow_abbrev=False,
    )
    pred.add_argument("target", metavar="RUN_DIR_or_CHECKPOINT")
    pred.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    pred.add_argument("--top-k", type=int, default=5, help="classes per image (default: 5)")
    pred.add_argument("--out", metavar="FILE", help="write predictions to FILE.csv or FILE.json")
    pred.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    pred.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, ... (default: auto)"
    )
    pred.add_argument(
        "--no-calibration", action="store_true", help="ignore the run's stored temperature (raw softmax)"
    )

    exp = sub.add_parser(
        "export",
        help="export one file (ONNX, TorchScript, ExportedProgram) with normalisation folded in, verified",
        description=(
            "Write the run's network as one file whose input is uint8 images, NCHW, 0..255 (the run's "
            "channels and eval image size, already resized/cropped; the normalisation, and the calibrated "
            "temperature when stored, are folded in) and whose output is logits [N, classes]. Class names, "
            "input size and preprocessing are in its metadata. The file is then reloaded in its runtime and "
            "checked against PyTorch on held test images (max |logit diff| <= 1e-4 * (1 + max |logit|)); "
            "a quantized file is checked by test accuracy before and after. Prints file size and batch-1 "
            "CPU latency of the original and the export. See docs/deploy.md."
        ),
        allow_abbrev=False,
    )
    exp.add_argument("target", metavar="RUN_DIR_or_CHECKPOINT")
    exp.add_argument(
        "--format",
        dest="fmt",
        choices=["onnx", "torchscript", "exported-program"],
        default="onnx",
        help="file format (default: onnx)",
    )
    exp.add_argument(
        "--quantize",
        choices=["dynamic"],
        default=None,
        help="dynamic int8 quantization: onnx (onnxruntime: Conv, MatMul/Gemm weights) or torchscript "
        "(torch.ao: nn.Linear layers); not for exported-program",
    )
    exp.add_argument("--out", metavar="FILE", help="output file (default: RUN/export/model.<format suffix>)")
    exp.add_argument(
        "--latency-runs", type=int, default=50, help="batch-1 timing runs, median reported (default: 50)"
    )
    exp.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


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


def _cmd_train(args: argparse.Namespace) -> int:
    from patchswap.engine import resume, train
    from patchswap.engine.config import load_config

    overrides = _overrides(args)
    if args.resume:
        if args.config:
            raise SystemExit("--resume uses the config saved in the run directory; drop --config")
        summary = resume(args.resume, overrides, from_checkpoint=args.from_checkpoint)
    else:
        summary = train(load_config(args.config, overrides), overwrite=args.overwrite)
    if summary:
        _print_summary(summary)
    return 0


_SUITE_FLAGS = ("eps", "pgd_steps", "corruptions", "severities", "max_images", "seed", "out")


def _cmd_eval(args: argparse.Namespace) -> int:
    from patchswap.engine import evaluate
    from patchswap.engine.harness import keep_freed_memory

    overrides = _parse_sets(args.set)
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


def _cmd_transfer(args: argparse.Namespace) -> int:
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
            raise SystemExit("--resume uses the config saved in the run directory; drop --config")
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


def _cmd_show_pairs(args: argparse.Namespace) -> int:
    from patchswap.engine.config import load_config
    from patchswap.engine.show_pairs import draw_pairs

    cfg = load_config(args.config, _overrides(args))
    pic = draw_pairs(cfg, pairs=args.pairs, out=args.out, scale=args.scale)
    rows = "anchors, partners, swapped anchors, swapped partners"
    print(f"wrote {pic.path}: rows = {rows}; classes {pic.classes} (both labelled in the picture)")
    print(f"swapped share of each pair: {pic.fractions}")
    return 0


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _cmd_compare(args: argparse.Namespace) -> int:
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
        sets = {**_overrides(args), **_parse_sets(args.set)}
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


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from patchswap.deploy import calibrate, format_calibration

    print(format_calibration(calibrate(args.target, device=args.device, batch_size=args.batch_size)))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from patchswap.deploy import format_predictions, load_run, load_temperature, predict, write_predictions

    run = load_run(args.target, device=args.device)
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


def _cmd_export(args: argparse.Namespace) -> int:
    from patchswap.deploy import export, format_export

    report = export(
        args.target, args.fmt, out=args.out, quantize=args.quantize, latency_runs=args.latency_runs
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_export(report))
    return 0 if report.verified else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from patchswap.data import DatasetNotFoundError
    from patchswap.engine.config import ConfigError
    from patchswap.engine.harness import RunError
    from patchswap.runs import CheckpointError

    handlers = {
        "train": _cmd_train,
        "eval": _cmd_eval,
        "show-pairs": _cmd_show_pairs,
        "compare": _cmd_compare,
        "transfer": _cmd_transfer,
        "calibrate": _cmd_calibrate,
        "predict": _cmd_predict,
        "export": _cmd_export,
    }
    try:
        return handlers[args.command](args)
    except (
        ConfigError,
        RunError,
        CheckpointError,
        DatasetNotFoundError,
        ValueError,
        FileNotFoundError,
        RuntimeError,
    ) as e:
        print(f"patchswap {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)  # distinct statuses: patchswap.engine.errors


if __name__ == "__main__":
    sys.exit(main())
