#!/usr/bin/env bash
# Lays into ./shared/ (ignored by git) what benchmarks/gpu_check.sh needs on a GPU machine that has PyTorch but
# neither internet nor this project's other packages: wheels of the run-time needs (shared/wheels, for Python
# $GPU_PYTHON, default 3.12) and a copy of the official LAMM checkout for bench.py official (shared/originals).
# Run it from a machine with pip access; the GPU machine then installs the wheels (docs/RUN.md, "GPU check").
#
#   bash benchmarks/gpu_prepare.sh FOLDER           # FOLDER holds originals/LAMM/ and wheels/dassl-*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE="${1:?usage: gpu_prepare.sh SHARED (the folder with originals/LAMM and wheels/dassl-*.whl)}"
PYVER="${GPU_PYTHON:-3.12}"
mkdir -p shared/wheels shared/originals
# Pure-Python wheels: open_clip and Dassl's import-time needs (the GPU image has torch, timm, pandas, scipy, ...).
python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d shared/wheels \
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0 yacs==0.1.8 gdown==6.5.1 beautifulsoup4==4.15.0 \
  soupsieve==4.1.3 wilds==2.0.0 outdated==0.2.2 littleutils==0.2.4
cp "$SOURCE"/wheels/dassl-*.whl shared/wheels/
rm -rf shared/originals/LAMM
cp -r "$SOURCE"/originals/LAMM shared/originals/LAMM
find shared -name __pycache__ -prune -exec rm -rf {} +
du -sh shared
