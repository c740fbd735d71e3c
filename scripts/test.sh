#!/usr/bin/env bash
# The README's test command: set up (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ $# -gt 0 ]; then
    python -m pytest -q "$@"
    exit
fi
# The whole suite: test files spread over TAFS_TEST_WORKERS processes (2: most tests wait on subprocesses, DAG
# runs and imports, so two workers keep 2 cores busy), a file's tests in one worker (module fixtures are shared).
# The Slurm test starts first and runs beside the others (it mostly waits on its scheduler; tests/conftest.py).
# The linter and the docs site first (seconds): pyflakes' findings, a broken link or a page missing from mkdocs.yml's
# nav fail the run.
python -m ruff check tafs tests bench scripts
python -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
python -m pytest -q -n "${TAFS_TEST_WORKERS:-2}" --dist loadfile
