#!/usr/bin/env bash
# Create .venv and install the package. torch and torchvision are pinned first to a matching pair (the reward
# models need torchvision: open_clip for HPSv2.1, the image processors), so pip never resolves a mismatched
# pair; TAFS_TORCH overrides them, e.g. TAFS_TORCH="torch torchvision" on a GPU machine with its own index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# constraints.txt pins every package to the tested version (the stack the tests and the README's numbers ran on).
python -m pip install -q -c constraints.txt ${TAFS_TORCH:-torch==2.14.1 torchvision==0.29.1}
python -m pip install -q -c constraints.txt -e ".[${TAFS_EXTRAS:-test}]"
