"""The ``patchswap`` argument parser: one subcommand per job, each with its config flags."""

from __future__ import annotations

import argparse

from patchswap.cli.flags import COMPARE_ALIASES, Parser, add_aliases, add_config_flags

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    add_config_flags(train)

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
        "--reference",
        help="entry the others are compared with seed by seed, or several (a,b: a table each); "
        "overrides the study's",
    )
    from patchswap.engine.config import RunConfig

    add_aliases(cmp, RunConfig(), COMPARE_ALIASES)  # quick form: = --set KEY=VALUE for all runs

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

    add_config_flags(transfer, TransferConfig)

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
    add_config_flags(show)

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
        "--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda[:N], mps (default: auto)"
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
        "--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda[:N], mps (default: auto)"
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
