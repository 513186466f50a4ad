#!/bin/bash
# Base-to-new generalisation, step 2: evaluate the model of base2new_train.sh on the new classes.
#
# Usage: scripts/lamm/base2new_test.sh DATASET SEED
#   SHOTS, TRAINER, CFG as for base2new_train.sh; LOADEP = epoch to load (default: the last checkpoint);
#   SUB = class subset to test (default new).
# New classes never trained keep CLIP's own class-name embeddings; learned labels are matched by class name.

source "$(dirname "$0")/common.sh"
TRAINER="${TRAINER:-LAMM_CoOp}"
CFG="${CFG:-vit_b16_ep50_ctxv1}"
SHOTS="${SHOTS:-16}"
SUB="${SUB:-new}"
LOADEP="${LOADEP:-}"
DATASET=$1
SEED=$2
shift 2

COMMON_DIR="${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}"
MODEL_DIR="${OUTPUT}/base2new/train_base/${COMMON_DIR}"
DIR="${OUTPUT}/base2new/test_${SUB}/${COMMON_DIR}"
job "${DIR}" "${DATASET}" "${SEED}" \
    --model-dir "${MODEL_DIR}" \
    ${LOADEP:+--load-epoch "${LOADEP}"} \
    --eval-only \
    DATASET.NUM_SHOTS "${SHOTS}" \
    DATASET.SUBSAMPLE_CLASSES "${SUB}" "$@"
