#!/usr/bin/env bash
# GPU check: every trainer of the registry (LAMM_<Host> and the baselines) x precision (fp32, fp16, bf16, amp) for
# one short epoch on the synthetic set with random ViT-B/16 weights, a --eval-only reload, the GPU tests of every
# host and the benchmark against the official LAMM code; prints one table and exits non-zero when any case failed.
# Options: see `python benchmarks/gpu_check.py --help`; docs/RUN.md "GPU check".
#
#   bash benchmarks/gpu_check.sh --output output/gpu_check
#   bash benchmarks/gpu_check.sh --device cpu --smoke      # the logic on a CPU: one tiny case and its reload
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python
  command -v python >/dev/null 2>&1 || PYTHON=python3  # images that ship only python3
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
