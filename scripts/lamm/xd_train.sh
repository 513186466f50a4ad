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
job "${DIR}" "${SOURCE}" "${SEED}" \
    DATASET.NUM_SHOTS "${SHOTS}" "$@"
