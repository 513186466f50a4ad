#!/bin/bash
# Cross-dataset transfer and domain generalisation, step 2: evaluate the source model on a target dataset.
#
# Usage: scripts/lamm/xd_test.sh DATASET SEED
#   cross-dataset targets: caltech101 dtd eurosat fgvc_aircraft food101 oxford_flowers oxford_pets stanford_cars
#   sun397 ucf101; domain-generalisation targets: imagenetv2 imagenet_sketch imagenet_a imagenet_r.
#   SOURCE, SHOTS, TRAINER, CFG as for xd_train.sh; LOADEP = epoch to load (default: the last checkpoint);
#   MODEL_DIR = the run whose model is tested (default: xd_train.sh's run of SOURCE, SHOTS, TRAINER, CFG and SEED).
# Target classes shared with the source (ImageNet -> its variants) take the learned labels, by class name.

source "$(dirname "$0")/common.sh"
TRAINER="${TRAINER:-LAMM_CoOp}"
CFG="${CFG:-vit_b16_ep50_ctxv1}"
SHOTS="${SHOTS:-16}"
SOURCE="${SOURCE:-imagenet}"
LOADEP="${LOADEP:-}"
DATASET=$1
SEED=$2
shift 2

MODEL_DIR="${MODEL_DIR:-${OUTPUT}/xd/train/${SOURCE}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}}"
DIR="${OUTPUT}/xd/test/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}"
job "${DIR}" "${DATASET}" "${SEED}" \
    --model-dir "${MODEL_DIR}" \
    ${LOADEP:+--load-epoch "${LOADEP}"} \
    --eval-only "$@"
