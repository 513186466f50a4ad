#!/bin/bash
# Few-shot classification: train on K shots of all classes, test on the full test set.
#
# Usage: scripts/lamm/fewshot.sh DATASET SHOTS SEED
#   e.g. scripts/lamm/fewshot.sh oxford_pets 16 1
#   TRAINER=LAMM_MaPLe CFG=vit_b16_c2_ep5_batch4_2ctx scripts/lamm/fewshot.sh oxford_pets 16 1
# Extra config options may follow: scripts/lamm/fewshot.sh oxford_pets 16 1 OPTIM.MAX_EPOCH 10
# A job whose output folder has results.json is skipped; an interrupted one resumes from its last checkpoint.

source "$(dirname "$0")/common.sh"
TRAINER="${TRAINER:-LAMM_CoOp}"
CFG="${CFG:-vit_b16_ep50_ctxv1}"
DATASET=$1
SHOTS=$2
SEED=$3
shift 3

DIR="${OUTPUT}/fewshot/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}"
job "${DIR}" "${DATASET}" "${SEED}" \
    DATASET.NUM_SHOTS "${SHOTS}" "$@"
