#!/usr/bin/env bash
# The whole fine-tuning study, in resumable pieces (rerun it to continue; finished runs are skipped).
# From the repository root: [STOP_AT=HH:MM (UTC: start no run after it)] bash docs/results/finetune-cifar5/run.sh
# (PATCHSWAP="python -m patchswap.cli" PYTHON=.venv/bin/python to run from a source checkout without installing)
# One training process at a time, one thread (a shared 2-core machine).
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
STUDY=docs/results/finetune-cifar5
PS="${PATCHSWAP:-patchswap}"
PY="${PYTHON:-python}"
late() { [[ -n "${STOP_AT:-}" && "$(date -u +%H:%M)" > "$STOP_AT" ]]; }

[[ -f runs/cifar5/finetune-5to9.npz ]] || $PY "$STUDY/make_data.py"
if [[ ! -f "$STUDY/runs/pretrain/summary.json" ]]; then
  if [[ -f "$STUDY/runs/pretrain/checkpoints/last.ckpt" ]]; then
    $PS train --resume "$STUDY/runs/pretrain"
  else
    $PS train --config "$STUDY/pretrain.yaml"
  fi
fi
for seed in 0 1 2 3 4; do    # seed by seed, so a stop leaves complete seeds
  for entry in ce ips ce-2x ips-inbatch ips-inbatch-2x; do
    late && { echo "past $STOP_AT: no new runs"; break 2; }
    $PS compare "$STUDY/study.yaml" --entries "$entry" --seeds "$seed"
    run="$STUDY/runs/study/$entry/s$seed"
    if [[ -f "$run/summary.json" && ! -f "$run/calibration.json" ]]; then
      $PS calibrate "$run" | tee "$run/calibrate.txt"
    fi
  done
done
if ! late; then $PS compare "$STUDY/study.yaml" --entries scratch-ce --seeds 0; fi
$PS compare "$STUDY/study.yaml" --report-only
$PY scripts/calibration_table.py "$STUDY/runs/study" --out "$STUDY/calibration.md"
