# Shared settings of the sweep scripts; sourced, not run.
#
# Environment (all optional):
#   DATA      dataset root (default: ./data)
#   OUTPUT    output root (default: ./output)
#   TRAINER   Dassl trainer (default set by each script)
#   CFG       config name under configs/trainers/${TRAINER}/ (default set by each script)
#   DRY_RUN   1 = print the commands instead of running them
#   PYTHON    interpreter (default: python)
#   DATASET_CONFIGS  folders (':'-separated) searched for DATASET.yaml before configs/datasets/: datasets of your
#             own (configs/datasets/folder.yaml copied and named after the dataset) are swept by that name

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA="${DATA:-./data}"
OUTPUT="${OUTPUT:-./output}"
PYTHON="${PYTHON:-python}"
DRY_RUN="${DRY_RUN:-0}"

# Run train.py, or print the command under DRY_RUN=1.
run_train() {
    if [ "${DRY_RUN}" = "1" ]; then
        echo "${PYTHON} ${REPO}/train.py $*"
    else
        "${PYTHON}" "${REPO}/train.py" "$@"
    fi
}

# True when DIR holds the results of a finished job.
finished() {
    [ -f "$1/results.json" ]
}

# The dataset config of a dataset name: DATASET_CONFIGS' folders first, then configs/datasets/.
dataset_cfg() {
    local dir
    local IFS=:
    for dir in ${DATASET_CONFIGS:-}; do
        if [ -n "${dir}" ] && [ -f "${dir}/$1.yaml" ]; then
            echo "${dir}/$1.yaml"
            return 0
        fi
    done
    echo "${REPO}/configs/datasets/$1.yaml"
}

trainer_cfg() {
    echo "${REPO}/configs/trainers/${TRAINER}/${CFG}.yaml"
}

# One job: train.py for DATASET and SEED with output in DIR, skipped when DIR already holds its results.
# Usage: job DIR DATASET SEED [more train.py arguments and config overrides]
job() {
    local dir=$1 dataset=$2 seed=$3
    shift 3
    if finished "${dir}"; then
        echo "Results are available in ${dir}. Skip this job"
        return 0
    fi
    local config
    config="$(dataset_cfg "${dataset}")"
    if [ "${DRY_RUN}" != "1" ] && [ ! -f "${config}" ]; then
        echo "Error: no dataset config ${dataset}.yaml in ${DATASET_CONFIGS:+DATASET_CONFIGS=${DATASET_CONFIGS} or }${REPO}/configs/datasets/: name a dataset of configs/datasets/, or put NAME.yaml (e.g. a copy of configs/datasets/folder.yaml) in a folder named by DATASET_CONFIGS" >&2
        return 1
    fi
    echo "Run this job and save the output to ${dir}"
    run_train \
        --root "${DATA}" \
        --seed "${seed}" \
        --trainer "${TRAINER}" \
        --dataset-config-file "${config}" \
        --config-file "$(trainer_cfg)" \
        --output-dir "${dir}" \
        "$@"
}
