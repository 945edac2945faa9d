#!/usr/bin/env bash
# Prepares .gpu/ for benchmarks/gpu_check.sh on a GPU machine that cannot reach a package index:
# wheels of what hamgraph needs beyond torch / torch-geometric / pandas / scipy / scikit-learn
# (python 3.12, manylinux x86-64) in .gpu/whl, and the dataset mirror in .gpu/datasets.
# There:  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
#         export PYTHONPATH=/tmp/site; pip install --no-deps --no-build-isolation -e .
#         bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
MIRROR="${HAMGRAPH_MIRROR:-../shared/datasets}"
mkdir -p .gpu/whl .gpu/datasets
for pkg in ogb outdated littleutils pydantic pydantic-core annotated-types typing-inspection \
           platformdirs optuna alembic sqlalchemy colorlog mako greenlet; do
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/whl "$pkg"
done
cp -r "$MIRROR"/. .gpu/datasets/
chmod -R u+w .gpu/datasets
du -sh .gpu
