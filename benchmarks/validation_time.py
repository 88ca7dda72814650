"""Seconds of one validation pass (``trainer.validate``) of an untrained resnet8 on the digits' val split.

Run it once per source tree to compare two versions of the engine, alternating them, e.g. before and
after validation metrics were logged once per split instead of per batch::

    git worktree add /tmp/before 1573517
    for i in 1 2; do for tree in /tmp/before .; do
      OMP_NUM_THREADS=1 PYTHONPATH=$tree/src python benchmarks/validation_time.py --eval-batch-size 16
    done; done

Prints the median of the passes after two warm-ups, the metrics (they must agree between versions)
and the number of batches.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import patchswap
from patchswap.engine.config import load_config
from patchswap.engine.harness import quiet_lightning
from patchswap.engine.training import ClassificationRun


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-batch-size", type=int, default=16)
    ap.add_argument("--passes", type=int, default=9, help="validation passes (the first two are warm-ups)")
    args = ap.parse_args()
    cfg = load_config(
        None,
        {
            "data.name": "digits",
            "data.val_split": "0.5",
            "data.eval_batch_size": str(args.eval_batch_size),
            "model.name": "resnet8",
            "trainer.accelerator": "cpu",
            "trainer.precision": "32-true",
        },
    )
    run = ClassificationRun(cfg)
    seconds = []
    with quiet_lightning(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = run.trainer(None, fit=False)
        for _ in range(args.passes):
            t0 = time.perf_counter()
            metrics = evaluator.validate(run.module, datamodule=run.datamodule, verbose=False)[0]
            seconds.append(time.perf_counter() - t0)
    shown = {k: round(v, 4) for k, v in metrics.items()}
    print(
        f"{patchswap.__file__}: median {statistics.median(seconds[2:]):.4f} s per pass, "
        f"{evaluator.num_val_batches[0]} batches of {args.eval_batch_size}, {shown}"
    )


if __name__ == "__main__":
    main()
