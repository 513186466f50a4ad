#!/bin/bash
# Every job of one benchmark table, seeds 1 2 3. fewshot, base2new and xd run through lamm_experiments/sweep.py:
# finished jobs are skipped (rerun the same command to resume), a failed job is recorded and the others go on
# (exit 1 at the end, after a summary), progress shows i/N and an ETA, several workers never take the same job.
#
# Usage: scripts/lamm/sweep.sh fewshot|base2new|xd [KEY VALUE ...] [--dry-run] [--gpus 0,1,...] [--workers N]
#                             [--engine submitit [--cluster slurm|local] [--partition P]]
#        scripts/lamm/sweep.sh continual   (TRAINER, CFG: one method; its runs record the stage protocol lamm-continual)
#        scripts/lamm/sweep.sh fewshot|base2new|xd|continual --protocol NAME [--methods A,B] [--dry-run]
#   --protocol: the jobs of a named protocol (python -m lamm_experiments.protocols lists them), each with the config
#   and overrides of its original (TRAINER and CFG come from the protocol); runs go under ${OUTPUT}/NAME/.
#   TRAINER, CFG, DATA, OUTPUT as for the single-job scripts; SEEDS (default "1 2 3");
#   DATASETS (default: the 11 datasets of CoOp's benchmark); SHOTS_LIST for fewshot (default "1 2 4 8 16");
#   KEY VALUE pairs are config overrides added to every job; SWEEP_PYTHON runs the sweep (default: python).
#   A dataset of your own: DATASETS=NAME with NAME.yaml in configs/datasets/ or in DATASET_CONFIGS (':'-separated
#   folders), e.g. a copy of configs/datasets/folder.yaml; sweep it without --protocol.
# Then: python scripts/make_tables.py ${OUTPUT:-output}   (see docs/RUN.md)

set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BENCH=${1:-}
if [ "${BENCH}" != "continual" ] || [[ " $* " == *" --protocol"* ]] || [ -n "${SWEEP_PROTOCOL:-}" ]; then
    exec "${SWEEP_PYTHON:-python}" "${HERE}/../sweep.py" "$@"
fi
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
