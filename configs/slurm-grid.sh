#!/usr/bin/env bash
# A grid across a Slurm cluster: array task I of N trains shard I/N of the grid (one GPU each).
# The shards partition the grid's packs deterministically, so the array covers it exactly once;
# every run is claimed before training, so even overlapping tasks never train a run twice.
#
#   sbatch --array=0-7 configs/slurm-grid.sh configs/paper-best.yaml        # 8 tasks, 8 GPUs
#   sbatch --array=0-7%4 configs/slurm-grid.sh configs/paper-best.yaml --pack 32
#   hamgraph run configs/paper-best.yaml --out results/paper-best           # afterwards: trains
#                                                # only what is missing, prints the summary
#   hamgraph report results/paper-best
#
# Arguments after the grid file go to `hamgraph run` (every task gets the same ones: the
# partition depends on --pack). Resubmitting the same array resumes: finished runs are kept;
# to redo one shard, run `hamgraph run GRID --shard 3/8` (a one-task array would be shard 0/1).
# The result dir must be on a file system all nodes share.
# A killed task's claims are taken over by whoever needs them 5 minutes after its last
# heartbeat (at once on the same host).
#
# Preemption and the time limit (docs/preemption.md): Slurm sends SIGUSR1 to hamgraph 120 s
# before the time limit (--signal below) and SIGTERM before a preemption; hamgraph then writes
# the checkpoints of the runs and packs in training and exits with 75. This script requeues
# the task on 75 (a preempted job is requeued by Slurm itself: --requeue), and the requeued
# task continues where it stopped. Node runs and packs also checkpoint every 5 minutes
# ($HAMGRAPH_CHECKPOINT_SECONDS), so even a hard kill loses minutes, not packs.
#
#   I = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP
#   N = SLURM_ARRAY_TASK_COUNT (else from the array's min, max and step)
#
# Environment: HAMGRAPH_OUT (default: hamgraph's, results/<grid name>/ under the submit dir),
# HAMGRAPH_DEVICE (default auto),
# HAMGRAPH_DATA (default: a per-job cache under $TMPDIR), HAMGRAPH_MIRROR (read-only raw files).
#
#SBATCH --job-name=hamgraph-grid
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:1
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%A_%a.out
#SBATCH --requeue
#SBATCH --signal=USR1@120
set -euo pipefail

GRID="${1:?usage: sbatch --array=0-N configs/slurm-grid.sh GRID.yaml [hamgraph run options]}"
shift
: "${SLURM_ARRAY_TASK_ID:?not an array task: submit with sbatch --array=0-N}"
MIN="${SLURM_ARRAY_TASK_MIN:-0}"
STEP="${SLURM_ARRAY_TASK_STEP:-1}"
if [[ -n "${SLURM_ARRAY_TASK_COUNT:-}" ]]; then
  COUNT="$SLURM_ARRAY_TASK_COUNT"
else
  : "${SLURM_ARRAY_TASK_MAX:?neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX is set}"
  COUNT=$(( (SLURM_ARRAY_TASK_MAX - MIN) / STEP + 1 ))
fi
OFFSET=$(( SLURM_ARRAY_TASK_ID - MIN ))
if (( OFFSET < 0 || OFFSET % STEP != 0 || OFFSET / STEP >= COUNT )); then
  echo "slurm-grid.sh: task ${SLURM_ARRAY_TASK_ID} is not on the array range" \
       "min ${MIN} step ${STEP} count ${COUNT}: use --array=A-B[:S]" >&2
  exit 2
fi
SHARD="$(( OFFSET / STEP ))/${COUNT}"

OUT=()                                           # shared by every node
if [[ -n "${HAMGRAPH_OUT:-}" ]]; then OUT=(--out "$HAMGRAPH_OUT"); fi
# Each node keeps its own dataset cache (processed files); the raw-file mirror is read-only.
export HAMGRAPH_DATA="${HAMGRAPH_DATA:-${TMPDIR:-/tmp}/hamgraph-data-${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}"

echo "hamgraph grid ${GRID}: shard ${SHARD}" >&2
# SIGTERM also reaches this shell on preemption: wait for hamgraph's checkpoint, do not die first
trap 'echo "slurm-grid.sh: SIGTERM; waiting for hamgraph to checkpoint" >&2' TERM
set +e
srun hamgraph run "$GRID" --shard "$SHARD" ${OUT[@]+"${OUT[@]}"} --device "${HAMGRAPH_DEVICE:-auto}" "$@"
CODE=$?
set -e
if (( CODE == 75 )); then  # hamgraph checkpointed and stopped (SIGUSR1 / SIGTERM): go on later
  echo "slurm-grid.sh: checkpointed, not finished (exit 75); requeueing job ${SLURM_JOB_ID}" >&2
  scontrol requeue "$SLURM_JOB_ID" || echo "slurm-grid.sh: requeue failed; resubmit" >&2
fi
exit "$CODE"
