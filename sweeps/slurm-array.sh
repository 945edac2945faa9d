#!/usr/bin/env bash
# Multi-node sweep on Slurm: every array task runs `hamgraph sweep` against ONE shared
# PostgreSQL database; Optuna hands out the cells, hamgraph makes sure none completes twice.
# Rerunning the same array (or a single task) resumes: finished trials and runs are kept.
#
#   1. A PostgreSQL server reachable from the compute nodes, one database for the sweeps:
#        createdb -h DBHOST -U USER hamgraph        (psycopg 3: pip install 'hamgraph[postgres]')
#   2. (Nothing to create by hand: every task creates or loads the studies, load_if_exists.)
#   3. Submit:  HAMGRAPH_STORAGE=postgresql://USER:PASS@DBHOST:5432/hamgraph \
#                 sbatch --array=0-7 sweeps/slurm-array.sh sweeps/node-ham.yaml
#   4. Watch:   optuna-dashboard postgresql://USER:PASS@DBHOST:5432/hamgraph
#   5. Tables:  hamgraph report results/node-ham
#
# The result store (runs.csv, records/) must be on a file system all nodes share (e.g.
# $HOME or a project dir); it is safe for many writers (atomic files + a file lock).
# Trials of a node that dies are failed and re-queued once their heartbeat is older than the
# grace period (3 minutes); their finished runs are reused.
# Preemption and the time limit (docs/preemption.md): Slurm sends SIGUSR1 120 s before the time
# limit and SIGTERM before a preemption; every worker checkpoints its pack, queues its open
# trials again, and exits with 75, on which this script requeues the task.
#
#SBATCH --job-name=hamgraph-sweep
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

SWEEP_FILE="${1:?usage: sbatch --array=0-N sweeps/slurm-array.sh SWEEP.yaml}"
: "${HAMGRAPH_STORAGE:?set HAMGRAPH_STORAGE=postgresql://USER:PASS@HOST:5432/DB}"
NAME="$(basename "$SWEEP_FILE" .yaml)"
OUT="${HAMGRAPH_OUT:-$PWD/results/$NAME}"          # shared by every node
WORKERS="${HAMGRAPH_WORKERS_PER_NODE:-1}"           # 1 per GPU; CPU nodes: a few

# Each node keeps its own dataset cache (processed files); the raw-file mirror is read-only.
export HAMGRAPH_DATA="${HAMGRAPH_DATA:-${TMPDIR:-/tmp}/hamgraph-data-$SLURM_JOB_ID}"
# Different TPE seeds per array task and srun task: every worker but the first one of a fresh
# study seeds TPE with a hash of (seed, worker, SLURM_ARRAY_TASK_ID.SLURM_PROCID, trials so far).
export SLURM_ARRAY_TASK_ID="${SLURM_ARRAY_TASK_ID:-0}"
# Each worker asks several trials at once and trains their runs as packs on its GPU
# (--batch N, default: the cells left; --pack auto sizes the packs from free memory).

# SIGTERM also reaches this shell on preemption: wait for hamgraph's checkpoint, do not die first
trap 'echo "slurm-array.sh: SIGTERM; waiting for hamgraph to checkpoint" >&2' TERM
set +e
srun hamgraph sweep "$SWEEP_FILE" \
  --storage "$HAMGRAPH_STORAGE" \
  --workers "$WORKERS" \
  --out "$OUT" \
  --device auto
CODE=$?
set -e
if (( CODE == 75 )); then  # hamgraph checkpointed and stopped (SIGUSR1 / SIGTERM): go on later
  echo "slurm-array.sh: checkpointed, not finished (exit 75); requeueing job ${SLURM_JOB_ID}" >&2
  scontrol requeue "$SLURM_JOB_ID" || echo "slurm-array.sh: requeue failed; resubmit" >&2
fi
exit "$CODE"
