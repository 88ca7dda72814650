#!/usr/bin/env bash
# The quick GPU study of issue 16: from a fresh checkout to results in at most 8 minutes on one GPU.
#
#   python scripts/prepare_quick_data.py        # once, where ../shared/data is: data/cifar10-quick.npz
#   bash scripts/gpu_quick_study.sh             # on the GPU machine (the npz travels with the tree)
#   CPU_SMOKE=1 OUTDIR=/tmp/q bash scripts/gpu_quick_study.sh   # the same path on a CPU, in seconds (CI)
#
# In one go it writes OUTDIR (default docs/results/gpu-quick/):
#   benchmark.md   the overhead rows of docs/benchmarks.md (benchmarks/overhead.py: patchswap's epoch
#                  against a plain loop; resnet18 at 32x32, 128 and 512 images/step, fp32/bf16, +-compile)
#   parallel.md    total images/s of 1 and of JOBS_TRY trainings side by side on the one GPU; the
#                  study runs with the count that gave more
#   results.md/.csv/.png, <entry>/s<seed>/   the study (patchswap compare): resnet18 on the CIFAR-10
#                  subset, ce at EPOCHS, ce at 2 x EPOCHS, ips at EPOCHS, seeds 0 1 2
#   machine.md     the GPU's name, torch, the commands, wall time of each part
# ARCHIVE=FILE also packs OUTDIR (without checkpoints) into FILE.tar.gz.
#
# Data: a class-balanced subset of the CIFAR-10 training arrays (1,500 per class, 15,000 images,
# 44 MiB; the GPU machine receives at most 64 MiB beside the code). 2,500 are held out as test and
# 1,500 as validation (split_seed 0), 11,000 train. Every GPU row uses this file.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
OUTDIR=${OUTDIR:-docs/results/gpu-quick}
DATA=${DATA:-data/cifar10-quick.npz}
SEEDS=${SEEDS:-0,1,2}
if [ -n "${CPU_SMOKE:-}" ]; then  # the CPU path of CI: everything shrunk to seconds
  ACCEL=cpu; MODEL=${MODEL:-resnet8}; EPOCHS=${EPOCHS:-1}; BATCH=${BATCH:-16}; PRECISION=32-true
  VAL=${VAL:-20}; TEST=${TEST:-20}; JOBS_TRY=${JOBS_TRY:-2}; PROBE_BATCHES=${PROBE_BATCHES:-2}
  BENCH_ARGS=${BENCH_ARGS:---device cpu --model resnet8 --cases 16:fp32 --rounds 1 --epochs 2}
else
  ACCEL=gpu; MODEL=${MODEL:-resnet18}; EPOCHS=${EPOCHS:-15}; BATCH=${BATCH:-128}; PRECISION=bf16-mixed
  VAL=${VAL:-1500}; TEST=${TEST:-2500}; JOBS_TRY=${JOBS_TRY:-3}; PROBE_BATCHES=${PROBE_BATCHES:-40}
  # compiled rows at 128 images/step only by default: each compile of resnet18 costs tens of seconds
  BENCH_ARGS=${BENCH_ARGS:---device cuda --rounds 2 --epochs 3 --cases 128:fp32,128:bf16,512:fp32,512:bf16,128:fp32:compile,128:bf16:compile}
fi
BENCH_SECONDS=${BENCH_SECONDS:-210}

# Python: $PY if set, else the checkout's .venv, else a python3 that already has torch and lightning (a GPU image with
# no network), else a fresh .venv (needs a network).
if [ -n "${PY:-}" ]; then
  :  # given
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
elif python3 -c "import torch, lightning, torchmetrics, safetensors, yaml" 2>/dev/null; then
  PY=python3
else
  python3 -m venv .venv
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/pip install -q -e ".[app]"
  PY=.venv/bin/python
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ ! -f "$DATA" ]; then
  "$PY" scripts/prepare_quick_data.py --out "$DATA"
fi
if [ "$ACCEL" = gpu ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU visible (CPU_SMOKE=1 runs the CPU path)'"
fi
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")
DEVICE_NAME=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() and '$ACCEL' == 'gpu' else 'cpu')")

# 1. The overhead rows (benchmarks/overhead.py), within BENCH_SECONDS: rows finished by then are kept.
T1=$(date +%s)
rm -f "$OUTDIR/benchmark.md"
(cd benchmarks && timeout "$BENCH_SECONDS" "$PY" overhead.py $BENCH_ARGS --data "npz:$DATA" \
  --markdown "$OUTDIR/benchmark.md") || echo "overhead benchmark stopped (time limit or error): rows so far kept"
T2=$(date +%s)

# 2. Side by side: total images/s of 1 and of JOBS_TRY short ips trainings at once.
PROBE="$OUTDIR/.probe"
rm -rf "$PROBE"
probe() {  # $1 = trainings at once; prints their total images/s
  local n=$1 pids=() i
  for i in $(seq 1 "$n"); do
    "$PY" -m patchswap.cli train --method ips --ips.pairing partner --data.name "npz:$DATA" --data.val_split 0 \
      --data.batch_size "$BATCH" --model.name "$MODEL" --trainer.accelerator "$ACCEL" \
      --trainer.precision "$PRECISION" --trainer.epochs 2 --trainer.limit_train_batches "$PROBE_BATCHES" \
      --trainer.progress_bar false --trainer.seed "$i" --trainer.run_dir "$PROBE/j$n-$i" >/dev/null 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i"; done
  "$PY" - "$PROBE" "$n" <<'EOF'
import csv, sys
from pathlib import Path
total = 0.0
for run in Path(sys.argv[1]).glob(f"j{sys.argv[2]}-*"):
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    total += float(rows[-1]["train/images_per_s"])  # the second epoch: warm
print(f"{total:.0f}")
EOF
}
ONE=$(probe 1)
MANY=$(probe "$JOBS_TRY")
JOBS=1
if "$PY" -c "import sys; sys.exit(0 if float('$MANY') > 1.1 * float('$ONE') else 1)"; then JOBS=$JOBS_TRY; fi
{
  echo "| trainings at once | total images/s (ips, $MODEL, $((2 * BATCH)) images/step, $PRECISION) |"
  echo "|---|---|"
  echo "| 1 | $ONE |"
  echo "| $JOBS_TRY | $MANY |"
  echo
  echo "The study ran $JOBS at once."
} > "$OUTDIR/parallel.md"
rm -rf "$PROBE"
T3=$(date +%s)

# 3. The study: ce, ce at twice the epochs, ips; 3 seeds; selected on validation, tested once.
cat > "$OUTDIR/study.yaml" <<EOF
# Written by scripts/gpu_quick_study.sh: the quick study's recipe.
seeds: [${SEEDS}]
out: .
reference: ce
set:
  data.name: npz:${DATA}
  data.val_split: ${VAL}
  data.test_split: ${TEST}
  data.split_seed: 0
  data.batch_size: ${BATCH}
  model.name: ${MODEL}
  optim.lr: 0.1
  optim.nesterov: true
  optim.schedule: onecycle
  trainer.accelerator: ${ACCEL}
  trainer.precision: ${PRECISION}
  trainer.epochs: ${EPOCHS}
entries:
  ce: {method: ce}
  ce-2x: {method: ce, trainer.epochs: $((2 * EPOCHS))}
  ips: {method: ips, ips.pairing: partner}  # the paper's sampler: ce-2x's images
EOF
"$PY" -m patchswap.cli compare "$OUTDIR/study.yaml" --jobs "$JOBS"
T4=$(date +%s)

{
  echo "# Quick GPU study: machine and timings"
  echo
  echo "- device: $DEVICE_NAME"
  echo "- torch: $("$PY" -c 'import torch; print(torch.__version__)'), lightning: $("$PY" -c 'import lightning; print(lightning.__version__)')"
  echo "- data: $(basename "$DATA") ($("$PY" -c "import numpy as np; print(len(np.load('$DATA')['y']))") images), val $VAL, test $TEST"
  echo "- command: \`bash scripts/gpu_quick_study.sh\` ($( [ -n "${CPU_SMOKE:-}" ] && echo "CPU_SMOKE=1" || echo "defaults"))"
  echo "- wall time: overhead rows $((T2 - T1)) s, side-by-side probe $((T3 - T2)) s, study $((T4 - T3)) s, total $((T4 - T0)) s"
} > "$OUTDIR/machine.md"
if [ -n "${ARCHIVE:-}" ]; then
  tar -czf "$ARCHIVE.tar.gz" -C "$(dirname "$OUTDIR")" --exclude=checkpoints --exclude=tensorboard "$(basename "$OUTDIR")"
fi
echo "wrote $OUTDIR: results.md, benchmark.md, parallel.md, machine.md ($((T4 - T0)) s)"
