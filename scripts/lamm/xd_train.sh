#!/bin/bash
# Cross-dataset transfer and domain generalisation, step 1: train on all classes of the source dataset.
#
# Usage: scripts/lamm/xd_train.sh SEED
#   SOURCE (default imagenet), SHOTS (default 16), TRAINER (default LAMM_CoOp), CFG (default vit_b16_ep50_ctxv1;
#   for MaPLe use vit_b16_c2_ep5_batch4_2ctx_cross_datasets) from the environment.

source "$(dirname "$0")/common.sh"
TRAINER="${TRAINER:-LAMM_CoOp}"
CFG="${CFG:-vit_b16_ep50_ctxv1}"
SHOTS="${SHOTS:-16}"
SOURCE="${SOURCE:-imagenet}"
SEED=$1
shift 1

DIR="${OUTPUT}/xd/train/${SOURCE}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}"
if finished "${DIR}"; then
    echo "Results are available in ${DIR}. Skip this job"
    exit 0
fi
echo "Run this job and save the output to ${DIR}"
run_train \
    --root "${DATA}" \
    --seed "${SEED}" \
    --trainer "${TRAINER}" \
    --dataset-config-file "$(dataset_cfg "${SOURCE}")" \
    --config-file "$(trainer_cfg)" \
    --output-dir "${DIR}" \
    DATASET.NUM_SHOTS "${SHOTS}" "$@"
