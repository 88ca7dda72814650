#!/usr/bin/env bash
# Issue 17's study in resnet8's converged setting (study.yaml), in resumable pieces: rerun to continue
# (finished runs are skipped, a killed run resumes from its last checkpoint). From the repository root:
#   [STOP_AT=HH:MM (UTC: start no run after it)] [JOBS=2] bash docs/results/cifar10-cpu-converged/run.sh
# (PATCHSWAP="python -m patchswap.cli" PYTHON=.venv/bin/python PYTHONPATH=src: from a source checkout.)
# Seed by seed, so a stop leaves complete seeds: the main entries for seeds 0-4, the variants of
# section 3 for seeds 0-2; every finished run is calibrated on its validation split (`patchswap
# calibrate`: the confident direction's post-hoc temperature, and everyone's calibrated ECE).
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
STUDY=docs/results/cifar10-cpu-converged
PS="${PATCHSWAP:-patchswap}"
PY="${PYTHON:-python}"
JOBS="${JOBS:-2}"
MAIN="ce ce-2x ips ips-confident cskd cutmix ips-half ips-inbatch ce-inbatch"
VARIANTS="ips-mixed ips-kl-ramp ips-kl-decay"
late() { [[ -n "${STOP_AT:-}" && "$(date -u +%H:%M)" > "$STOP_AT" ]]; }

for seed in 0 1 2 3 4; do
  entries=$MAIN
  if (( seed < 3 )); then entries="$entries $VARIANTS"; fi
  late && { echo "past $STOP_AT: no new runs"; break; }
  $PS compare "$STUDY/study.yaml" --jobs "$JOBS" --seeds "$seed" --entries "${entries// /,}"
  for entry in $entries; do
    run="$STUDY/runs/study/$entry/s$seed"
    if [[ -f "$run/summary.json" && ! -f "$run/calibration.json" ]]; then
      $PS calibrate "$run" > "$run/calibrate.txt"
    fi
  done
done
$PS compare "$STUDY/study.yaml" --report-only
$PY scripts/calibration_table.py "$STUDY/runs/study"
$PY scripts/export_study_weights.py "$STUDY"
