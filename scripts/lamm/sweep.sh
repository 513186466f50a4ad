#!/bin/bash
# Every job of one benchmark table, seeds 1 2 3 (one after the other; run several copies of this script on
# different GPUs with different SEEDS to parallelise, finished jobs are skipped).
#
# Usage: scripts/lamm/sweep.sh fewshot|base2new|xd|continual
#   TRAINER, CFG, DATA, OUTPUT as for the single-job scripts; SEEDS (default "1 2 3");
#   DATASETS (default: the 11 datasets of CoOp's benchmark); SHOTS_LIST for fewshot (default "1 2 4 8 16").
# Then: python scripts/parse_results.py ${OUTPUT:-output}/<benchmark>   (see docs/RUN.md)

set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BENCH=$1
SEEDS="${SEEDS:-1 2 3}"
DATASETS="${DATASETS:-caltech101 dtd eurosat fgvc_aircraft food101 oxford_flowers oxford_pets stanford_cars sun397 ucf101 imagenet}"
SHOTS_LIST="${SHOTS_LIST:-1 2 4 8 16}"
XD_TARGETS="${XD_TARGETS:-caltech101 dtd eurosat fgvc_aircraft food101 oxford_flowers oxford_pets stanford_cars sun397 ucf101 imagenetv2 imagenet_sketch imagenet_a imagenet_r}"

for SEED in ${SEEDS}; do
    case "${BENCH}" in
        fewshot)
            for SHOTS in ${SHOTS_LIST}; do
                for DATASET in ${DATASETS}; do
                    bash "${HERE}/fewshot.sh" "${DATASET}" "${SHOTS}" "${SEED}"
                done
            done
            ;;
        base2new)
            for DATASET in ${DATASETS}; do
                bash "${HERE}/base2new_train.sh" "${DATASET}" "${SEED}"
                bash "${HERE}/base2new_test.sh" "${DATASET}" "${SEED}"
            done
            ;;
        xd)
            bash "${HERE}/xd_train.sh" "${SEED}"
            for DATASET in ${XD_TARGETS}; do
                bash "${HERE}/xd_test.sh" "${DATASET}" "${SEED}"
            done
            ;;
        continual)
            for DATASET in ${DATASETS}; do
                bash "${HERE}/continual.sh" "${DATASET}" "${SEED}"
            done
            ;;
        *)
            echo "Unknown benchmark '${BENCH}': use fewshot, base2new, xd or continual" >&2
            exit 2
            ;;
    esac
done
