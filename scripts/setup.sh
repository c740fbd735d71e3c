#!/usr/bin/env bash
# Create .venv and install the package. torch is pinned first to the local CPU wheel where one exists
# (TAFS_TORCH overrides it, e.g. TAFS_TORCH="torch" on a GPU machine), so pip never pulls CUDA wheels here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "${TAFS_TORCH:-torch==2.13.0}"
python -m pip install -q -e ".[${TAFS_EXTRAS:-test}]"
