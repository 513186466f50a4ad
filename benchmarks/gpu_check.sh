#!/usr/bin/env bash
# GPU check: every LAMM trainer x precision (fp16, bf16, amp, fp32) for one short epoch on the synthetic set
# with random ViT-B/16 weights, one --eval-only reload, and the step benchmark on CUDA; prints one table and
# exits non-zero when any case failed. Options: see `python benchmarks/gpu_check.py --help`.
#
#   bash benchmarks/gpu_check.sh
#   bash benchmarks/gpu_check.sh --device cpu --backbone tiny-vit --precisions fp32 bf16   # the logic on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
