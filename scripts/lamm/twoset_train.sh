#!/bin/bash
# Two-set continual protocol of the official LAMM repository ("incremental training"): train on one half of the
# classes of DATASET, base (set 1) or new (set 2), K shots, and test on that half. The halves are separate runs;
# there is no combined evaluation (lamm_experiments/protocols.py, lamm-official-incremental).
#
# Usage: scripts/lamm/twoset_train.sh DATASET base|new SEED
#   SHOTS (default 16), TRAINER (default LAMM_CoOp), CFG (default vit_b16_ep50_ctxv1_frozen_official) from the
#   environment; extra config options may follow.

source "$(dirname "$0")/common.sh"
TRAINER="${TRAINER:-LAMM_CoOp}"
CFG="${CFG:-vit_b16_ep50_ctxv1_frozen_official}"
SHOTS="${SHOTS:-16}"
DATASET=$1
SET=$2
SEED=$3
shift 3
case "${SET}" in
    base | new) ;;
    *)
        echo "The set is base or new, not '${SET}'" >&2
        exit 2
        ;;
esac

DIR="${OUTPUT}/twoset/${SET}/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}"
job "${DIR}" "${DATASET}" "${SEED}" \
    DATASET.NUM_SHOTS "${SHOTS}" \
    DATASET.SUBSAMPLE_CLASSES "${SET}" "$@"
