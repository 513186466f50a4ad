#!/bin/bash
# Continual (class-incremental) learning in two stages, LAMM alone (context frozen):
#   stage 1 learns the label embeddings of the base classes, stage 2 those of the new classes; with the context
#   frozen every class owns its labels, so stage 2 cannot disturb stage 1. The combined model (stage-1 labels via
#   MODEL.INIT_WEIGHTS, stage-2 labels via --model-dir, matched by class name) is then tested on all, base and new
#   classes.
#
# Usage: scripts/lamm/continual.sh DATASET SEED
#   SHOTS (default 16), TRAINER (default LAMM_CoOp), CFG (default vit_b16_ep50_ctxv1_frozen) from the environment.

source "$(dirname "$0")/common.sh"
TRAINER="${TRAINER:-LAMM_CoOp}"
CFG="${CFG:-vit_b16_ep50_ctxv1_frozen}"
SHOTS="${SHOTS:-16}"
DATASET=$1
SEED=$2
shift 2

ROOT="${OUTPUT}/continual/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}"
COMMON=(--root "${DATA}" --seed "${SEED}" --trainer "${TRAINER}"
        --dataset-config-file "$(dataset_cfg "${DATASET}")" --config-file "$(trainer_cfg)")

for STAGE in 1 2; do
    SUB=$([ "${STAGE}" = 1 ] && echo base || echo new)
    DIR="${ROOT}/stage${STAGE}_${SUB}/seed${SEED}"
    if finished "${DIR}"; then
        echo "Results are available in ${DIR}. Skip this job"
        continue
    fi
    echo "Stage ${STAGE}: train on the ${SUB} classes and save the output to ${DIR}"
    run_train "${COMMON[@]}" --output-dir "${DIR}" DATASET.NUM_SHOTS "${SHOTS}" DATASET.SUBSAMPLE_CLASSES "${SUB}" "$@"
done

STAGE1="${ROOT}/stage1_base/seed${SEED}"
STAGE1_CKPT="${STAGE1}/prompt_learner/$(cat "${STAGE1}/prompt_learner/checkpoint" 2>/dev/null || echo model.pth.tar)"
for SUB in all base new; do
    DIR="${ROOT}/test_${SUB}/seed${SEED}"
    if finished "${DIR}"; then
        echo "Results are available in ${DIR}. Skip this job"
        continue
    fi
    echo "Evaluate stage 1 + stage 2 on the ${SUB} classes and save the output to ${DIR}"
    run_train "${COMMON[@]}" --output-dir "${DIR}" --model-dir "${ROOT}/stage2_new/seed${SEED}" --eval-only \
        DATASET.NUM_SHOTS "${SHOTS}" DATASET.SUBSAMPLE_CLASSES "${SUB}" MODEL.INIT_WEIGHTS "${STAGE1_CKPT}" "$@"
done
