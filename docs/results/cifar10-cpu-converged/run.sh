#!/usr/bin/env bash
# Issue 17's study in resnet8's converged setting (study.yaml), in resumable pieces: rerun to continue
# (finished runs are skipped, a killed run resumes from its last checkpoint). From the repository root:
#   [STOP_AT="2026-12-01 01:30" or HH:MM (start no new phase after it)] [JOBS=2] bash docs/results/cifar10-cpu-converged/run.sh
# (PATCHSWAP="python -m patchswap.cli" PYTHON=.venv/bin/python PYTHONPATH=src: from a source checkout.)
# In phases, each over all its seeds (seed-major, so a stop leaves the early seeds complete, and both
# cores stay busy across seeds): the question first (ce, ce at twice the epochs, ips; seeds
# 0-4), then section 1's other three entries, section 2's three entries (IPS at ce's cost and its
# control) for seeds 0-4, and section 3's variants for seeds 0-2. Every finished
# run is calibrated on its validation split after each phase (`patchswap calibrate`: the confident
# direction's post-hoc temperature, and everyone's calibrated ECE).
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
STUDY=docs/results/cifar10-cpu-converged
PS="${PATCHSWAP:-patchswap}"
PY="${PYTHON:-python}"
JOBS="${JOBS:-2}"

# A bare HH:MM already past when the script starts means that time tomorrow (a stop after midnight).
stop_s=""
if [[ -n "${STOP_AT:-}" ]]; then
  stop_s=$(date -u -d "$STOP_AT" +%s)
  if [[ "$STOP_AT" =~ ^[0-9]{1,2}:[0-9]{2}$ ]] && (( stop_s < $(date -u +%s) )); then
    stop_s=$((stop_s + 86400))
  fi
fi
late() { [[ -n "$stop_s" ]] && (( $(date -u +%s) > stop_s )); }

calibrate_finished() {
  for run in "$STUDY"/runs/study/*/s*; do
    if [[ -f "$run/summary.json" && ! -f "$run/calibration.json" ]]; then
      $PS calibrate "$run" > "$run/calibrate.txt"
    fi
  done
}

phase() {  # seeds entries
  if late; then echo "past $STOP_AT: phase $2 not started"; return 1; fi
  $PS compare "$STUDY/study.yaml" --jobs "$JOBS" --seeds "$1" --entries "$2"
  calibrate_finished
}

phase 0,1,2,3,4 ce,ce-2x,ips \
  && phase 0,1,2,3,4 ips-confident,cskd,cutmix \
  && phase 0,1,2,3,4 ips-half,ips-inbatch,ce-inbatch \
  && phase 0,1,2 ips-mixed,ips-kl-ramp,ips-kl-decay || true
$PS compare "$STUDY/study.yaml" --report-only
$PY scripts/calibration_table.py "$STUDY/runs/study" --reference ips --reference ce-2x
$PY scripts/export_study_weights.py "$STUDY"
