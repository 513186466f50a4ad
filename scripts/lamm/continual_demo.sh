#!/bin/bash
# The continual-learning baselines on the generated shapes (12 classes, 4 stages of 3), tiny random-weight CLIP,
# on a CPU: zero-shot CLIP, CoOp (context trained in every stage), LAMM alone, CoOp+LAMM (context frozen after
# stage 1, and trained in every stage), MaPLe+LAMM (shared prompts frozen after stage 1); then the table.
# With random CLIP weights the numbers only show the protocol at work (chance: 1/3 at stage 1, 1/12 at the end).
#
# 32 test images per class (96 per stage) in their own folder, DATA/synthetic_shapes_continual.
# Usage: scripts/lamm/continual_demo.sh [KEY VALUE ...]     (DATA default ./data, OUTPUT default ./output;
#        SHOTS default 8, EPOCHS default 4)

source "$(dirname "$0")/common.sh"
export SHOTS="${SHOTS:-8}"
EPOCHS="${EPOCHS:-4}"
run() {  # TRAINER CFG SHARED [more overrides]
    local trainer=$1 cfg=$2 shared=$3
    shift 3
    TRAINER="${trainer}" CFG="${cfg}" SHARED="${shared}" bash "$(dirname "$0")/continual.sh" synthetic_shapes 1 \
        OPTIM.MAX_EPOCH "${EPOCHS}" DATASET.SYNTHETIC.DIR synthetic_shapes_continual \
        DATASET.SYNTHETIC.TEST_PER_CLASS 32 "$@"
}
run ZeroshotCLIP demo_cpu freeze "$@"
run CoOp demo_cpu train "$@"
run LAMM_CoOp demo_cpu_frozen freeze "$@"
run LAMM_CoOp demo_cpu freeze "$@"
run LAMM_CoOp demo_cpu train "$@"
run LAMM_MaPLe demo_cpu freeze "$@"

if [ "${DRY_RUN}" != "1" ]; then
    "${PYTHON}" "${REPO}/scripts/continual_table.py" "${OUTPUT}/continual/synthetic_shapes"
fi
