#!/bin/bash
# Base-to-new generalisation, step 1: train on the base half of the classes (K shots) and test on base classes.
#
# Usage: scripts/lamm/base2new_train.sh DATASET SEED
#   SHOTS (default 16), TRAINER (default LAMM_CoOp), CFG (default vit_b16_ep50_ctxv1) from the environment.
# The base accuracy is in the job's results.json; scripts/lamm/base2new_test.sh gives the new-class accuracy.

source "$(dirname "$0")/common.sh"
TRAINER="${TRAINER:-LAMM_CoOp}"
CFG="${CFG:-vit_b16_ep50_ctxv1}"
SHOTS="${SHOTS:-16}"
DATASET=$1
SEED=$2
shift 2

DIR="${OUTPUT}/base2new/train_base/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}"
job "${DIR}" "${DATASET}" "${SEED}" \
    DATASET.NUM_SHOTS "${SHOTS}" \
    DATASET.SUBSAMPLE_CLASSES base "$@"
