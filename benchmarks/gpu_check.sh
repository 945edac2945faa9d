#!/usr/bin/env bash
# The GPU check (issue "packed training", item 5): one command, under 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh                 # on CUDA
#   benchmarks/gpu_check.sh --device cpu    # the dry run (CI-sized, no GPU needed)
#
# Runs the CUDA test subset (pytest -m cuda), then benchmarks/gpu_check.py (HAM fused vs
# foreach, cora GCN/GAT/SAGE single and packed, a molhiv GCN+ epoch, determinism with and
# without --deterministic), then the packed and HAM-step benchmarks at small sizes. Data:
# $HAMGRAPH_MIRROR (default ../shared/datasets, or .gpu/datasets when that exists).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
EPOCHS=200
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --epochs) EPOCHS="$2"; shift 2 ;;
    *) echo "gpu_check.sh: unknown option $1 (use --device DEV, --epochs N)" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
if [ -z "${HAMGRAPH_MIRROR:-}" ]; then
  if [ -d .gpu/datasets ]; then export HAMGRAPH_MIRROR="$PWD/.gpu/datasets"
  else export HAMGRAPH_MIRROR="$(cd ../shared/datasets && pwd)"; fi
fi
export HAMGRAPH_DATA="${HAMGRAPH_DATA:-$(mktemp -d)}" HAMGRAPH_ALLOW_DOWNLOAD=0 PYTHONUNBUFFERED=1
# the CPU dry run checks that everything runs, at sizes a CPU finishes in minutes
if [ "$DEVICE" = cpu ]; then EPOCHS=10; SIZES=1,5; BENCH_EPOCHS=4; STEP_SIZES=1M
else SIZES=1,5,25,125; BENCH_EPOCHS=20; STEP_SIZES=1M,10M; fi

echo "== CUDA tests (pytest -m cuda; skipped without CUDA)"
set +e
"$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_packed.py tests/test_optim_functional.py
code=$?
set -e
if [ "$code" -ne 0 ] && [ "$code" -ne 5 ]; then echo "CUDA tests failed" >&2; exit "$code"; fi

echo "== checks"  # a failed check still lets the benchmarks run; the exit code says it
status=0
"$PY" benchmarks/gpu_check.py --device "$DEVICE" --epochs "$EPOCHS" || status=$?

echo "== packed benchmark"
"$PY" benchmarks/packed.py --device "$DEVICE" --sizes "$SIZES" --epochs "$BENCH_EPOCHS" --timeout 90

echo "== HAM step benchmark"
"$PY" benchmarks/ham_step.py --device "$DEVICE" --sizes "$STEP_SIZES"
exit "$status"
