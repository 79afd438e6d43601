#!/usr/bin/env bash
# Submit bids-deface to Slurm: a job array with one task per participant, then the group
# level once every task has ended.
#
#   scripts/hpc/submit.sh BIDS_DIR OUTPUT_DIR [bids-deface options]
#
# Prints the two job ids ("ARRAY_ID GROUP_ID") on stdout, the rest on stderr. The
# participant list is snapshotted at submission (OUTPUT_DIR/logs/slurm/participants_*.txt),
# so that task i stays the same participant even if the dataset changes while it waits.
#
# Environment (besides those of bids-deface-array.sbatch: BIDS_DEFACE_SIF,
# BIDS_DEFACE_VENV, BIDS_DEFACE_SKIP_VALIDATION, ...):
#   BIDS_DEFACE_SBATCH_ARGS="..."        sbatch options for both jobs (--partition, --account, --qos)
#   BIDS_DEFACE_ARRAY_SBATCH_ARGS="..."  for the array only (--cpus-per-task, --mem, --time, --gres=gpu:1)
#   BIDS_DEFACE_GROUP_SBATCH_ARGS="..."  for the group job only
#   BIDS_DEFACE_MAX_TASKS=N              at most N tasks at once (--array=0-M%N)
#   BIDS_DEFACE_SLURM_LOGS=DIR           where Slurm writes the jobs' output
#                                        (default OUTPUT_DIR/logs/slurm, which .bidsignore covers;
#                                        with --output-layout raw: the QC folder's logs/slurm)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARRAY_SCRIPT=$HERE/bids-deface-array.sbatch
GROUP_SCRIPT=$HERE/bids-deface-group.sbatch

if [ $# -lt 2 ] || [ ! -d "$1" ]; then
    echo "usage: $0 BIDS_DIR OUTPUT_DIR [bids-deface options]" >&2
    exit 2
fi
command -v sbatch >/dev/null || { echo "sbatch not found: run this on a Slurm login node" >&2; exit 2; }
BIDS_DIR=$(realpath "$1")
OUT_DIR=$(realpath -m "$2")
shift 2

LOG_ROOT=$OUT_DIR
prev=""
for a in "$@"; do
    case $prev/$a in
        */--participant-label|*/--participant_label|*/--participant-label=*|*/--participant_label=*)
            echo "--participant-label is set per task; to run a subset, list the labels in a file" \
                 "and set BIDS_DEFACE_PARTICIPANTS_FILE" >&2
            exit 2 ;;
        --output-layout/raw|*/--output-layout=raw) [ "$LOG_ROOT" = "$OUT_DIR" ] && LOG_ROOT=${OUT_DIR}_qc ;;
        --qc-dir/*) LOG_ROOT=$(realpath -m "$a") ;;
        */--qc-dir=*) LOG_ROOT=$(realpath -m "${a#--qc-dir=}") ;;
    esac
    prev=$a
done
LOG_DIR=${BIDS_DEFACE_SLURM_LOGS:-$LOG_ROOT/logs/slurm}
mkdir -p "$LOG_DIR"

LIST=$(mktemp "$LOG_DIR/participants_$(date +%Y%m%dT%H%M%S)_XXXX.txt")
if [ -n "${BIDS_DEFACE_PARTICIPANTS_FILE:-}" ]; then
    sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e 's/^sub-//' \
        "$BIDS_DEFACE_PARTICIPANTS_FILE" | grep -v '^$' > "$LIST" || true
else
    bash "$ARRAY_SCRIPT" --list "$BIDS_DIR" > "$LIST"
fi
N=$(wc -l < "$LIST")
if [ "$N" -eq 0 ]; then
    echo "no participant with anatomical data (sub-*/anat or sub-*/ses-*/anat) in $BIDS_DIR" >&2
    exit 5
fi
RANGE=0-$((N - 1))${BIDS_DEFACE_MAX_TASKS:+%$BIDS_DEFACE_MAX_TASKS}

# shellcheck disable=SC2206  # the *_SBATCH_ARGS are word-split on purpose
common=(${BIDS_DEFACE_SBATCH_ARGS:-})
# shellcheck disable=SC2206
array_extra=(${BIDS_DEFACE_ARRAY_SBATCH_ARGS:-})
# shellcheck disable=SC2206
group_extra=(${BIDS_DEFACE_GROUP_SBATCH_ARGS:-})

ARRAY_ID=$(BIDS_DEFACE_PARTICIPANTS_FILE=$LIST \
    sbatch --parsable --array="$RANGE" --output="$LOG_DIR/%x_%A_%a.out" --export=ALL "${common[@]}" "${array_extra[@]}" \
    "$ARRAY_SCRIPT" "$BIDS_DIR" "$OUT_DIR" "$@")
ARRAY_ID=${ARRAY_ID%%;*}
GROUP_ID=$(sbatch --parsable --dependency="afterany:$ARRAY_ID" --output="$LOG_DIR/%x_%j.out" \
    --export=ALL "${common[@]}" "${group_extra[@]}" \
    "$GROUP_SCRIPT" "$BIDS_DIR" "$OUT_DIR" "$@")
GROUP_ID=${GROUP_ID%%;*}

{
    echo "participants: $N (task i = line i+1 of $LIST)"
    echo "array job $ARRAY_ID: tasks $RANGE, output in $LOG_DIR/bids-deface_${ARRAY_ID}_<task>.out"
    echo "group job $GROUP_ID: after every task has ended (afterany), output in $LOG_DIR/bids-deface-group_${GROUP_ID}.out"
    echo "watch: squeue -j $ARRAY_ID,$GROUP_ID"
} >&2
echo "$ARRAY_ID $GROUP_ID"
