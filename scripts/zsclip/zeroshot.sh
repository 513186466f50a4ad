#!/bin/bash
# Zero-shot CLIP (no training) with CoOp's per-dataset templates.
#
# Usage: scripts/zsclip/zeroshot.sh DATASET
#   SUB = class subset (all, base or new; default all), PART = the folder's name for it (default SUB; the sweep's
#   cross-dataset tables use xd_source and xd_target), CFG (default vit_b16), DATA, OUTPUT from the environment.

source "$(dirname "$0")/../lamm/common.sh"
TRAINER=ZeroshotCLIP
CFG="${CFG:-vit_b16}"
SUB="${SUB:-all}"
PART="${PART:-${SUB}}"
DATASET=$1
shift 1

DIR="${OUTPUT}/zeroshot/${PART}/${DATASET}/${TRAINER}/${CFG}"
if finished "${DIR}"; then
    echo "Results are available in ${DIR}. Skip this job"
    exit 0
fi
run_train \
    --root "${DATA}" \
    --trainer "${TRAINER}" \
    --dataset-config-file "$(dataset_cfg "${DATASET}")" \
    --config-file "$(trainer_cfg)" \
    --output-dir "${DIR}" \
    --eval-only \
    DATASET.SUBSAMPLE_CLASSES "${SUB}" "$@"
