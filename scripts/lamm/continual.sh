#!/bin/bash
# Class-incremental continual learning: the classes of DATASET split into stages, each stage trained from the last
# (continual.py). Earlier classes' label rows stay frozen; SHARED says what happens to the method's shared tensors
# (context, deep prompts) after stage 1: "freeze" (default) or "train" (they can forget; measured).
#
# Usage: scripts/lamm/continual.sh DATASET SEED [KEY VALUE ...]
#   From the environment: TRAINER (default LAMM_CoOp), CFG (default vit_b16_ep50_ctxv1_frozen: LAMM alone),
#   SHOTS (default 16; 0 or less: the full training set), SHARED (freeze|train), PROTOCOL (default
#   configs/continual/<protocol of DATASET>: cifar100_10x10, imagenet_r_10x20, synthetic_shapes -> synthetic_4x3;
#   other datasets: STAGES stages, default 10, class order from seed ORDER_SEED, default 1993).
# Output: ${OUTPUT}/continual/DATASET/shots_SHOTS/TRAINER/CFG/shared_SHARED/seedSEED/{stage<k>/,results.json,table.md}

source "$(dirname "$0")/common.sh"
TRAINER="${TRAINER:-LAMM_CoOp}"
CFG="${CFG:-vit_b16_ep50_ctxv1_frozen}"
SHOTS="${SHOTS:-16}"
SHARED="${SHARED:-freeze}"
DATASET=$1
SEED=$2
shift 2

case "${DATASET}" in
    cifar100) DEFAULT_PROTOCOL=cifar100_10x10 ;;
    imagenet_r) DEFAULT_PROTOCOL=imagenet_r_10x20 ;;
    synthetic_shapes) DEFAULT_PROTOCOL=synthetic_4x3 ;;
    *) DEFAULT_PROTOCOL="" ;;
esac
PROTOCOL="${PROTOCOL:-${DEFAULT_PROTOCOL}}"
if [ -n "${PROTOCOL}" ]; then
    SPLIT=(--protocol "${REPO}/configs/continual/${PROTOCOL}.yaml")
else
    SPLIT=(--stages "${STAGES:-10}" --order-seed "${ORDER_SEED:-1993}")
fi

DIR="${OUTPUT}/continual/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/shared_${SHARED}/seed${SEED}"
if finished "${DIR}"; then
    echo "Results are available in ${DIR}. Skip this job"
    exit 0
fi
echo "Run the continual stages and save the output to ${DIR}"
ARGS=(--root "${DATA}" --seed "${SEED}" --trainer "${TRAINER}"
      --dataset-config-file "$(dataset_cfg "${DATASET}")" --config-file "$(trainer_cfg)"
      --output-dir "${DIR}" "${SPLIT[@]}" --shared "${SHARED}" DATASET.NUM_SHOTS "${SHOTS}" "$@")
if [ "${DRY_RUN}" = "1" ]; then
    echo "${PYTHON} ${REPO}/continual.py ${ARGS[*]}"
else
    "${PYTHON}" "${REPO}/continual.py" "${ARGS[@]}"
fi
