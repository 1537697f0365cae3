#!/usr/bin/env bash
# Set up everything from scratch and run the whole test suite, real engine included.
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export EVALPIPE_SHARED_DATA="${EVALPIPE_SHARED_DATA:-$(cd .. && pwd)/shared/data}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "== ruff"; ruff check evalpipe tests benchmarks
echo "== mypy --strict"; mypy
echo "== pytest"; python -m pytest "$@"
