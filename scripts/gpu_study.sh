#!/usr/bin/env bash
# The GPU study of issue 7, end to end on a fresh GPU machine: set up, fetch the data, train every
# (architecture, method, seed) run of a study file, and write results.md / results.csv / results.png.
#
#   bash scripts/gpu_study.sh configs/gpu-study/cifar100.yaml           # everything (resumable)
#   MAX_RUNS=6 JOBS=2 bash scripts/gpu_study.sh configs/gpu-study/cifar10-offline.yaml
#
# Rerunning the same command skips finished runs and resumes killed ones from their last checkpoint.
# JOBS runs that many trainings side by side on the one GPU (small CIFAR models rarely fill an H100).
# The cifar100/cifar10 studies download their data into ./data (needs a network once);
# cifar10-offline uses ../shared/data and needs none.
set -euo pipefail
STUDY=${1:-configs/gpu-study/cifar100.yaml}
JOBS=${JOBS:-1}
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/patchswap ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/pip install -q -e ".[app]"
fi
case "$STUDY" in
  *cifar100*) .venv/bin/python -c "import torchvision; torchvision.datasets.CIFAR100('./data', train=True, download=True); torchvision.datasets.CIFAR100('./data', train=False, download=True)" ;;
  *cifar10-offline*) ;;
  *cifar10*) .venv/bin/python -c "import torchvision; torchvision.datasets.CIFAR10('./data', train=True, download=True); torchvision.datasets.CIFAR10('./data', train=False, download=True)" ;;
esac
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'no GPU visible: this study is configured for accelerator=gpu'"
.venv/bin/patchswap compare "$STUDY" --jobs "$JOBS" ${MAX_RUNS:+--max-runs "$MAX_RUNS"}
echo "results: runs/gpu-study/$(basename "$STUDY" .yaml)/results.md"
