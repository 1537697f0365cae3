#!/usr/bin/env bash
# Set up everything from scratch and run the whole test suite, real engine included.
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-chromium.sh   # Debian chromium for the dashboard's browser test
export PATH="$PWD/.venv/bin:$PATH"
export EVALPIPE_SHARED_DATA="${EVALPIPE_SHARED_DATA:-$(cd .. && pwd)/shared/data}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Screenshots and other things a person should look at after CI.
export EVALPIPE_ARTIFACTS_DIR="${EVALPIPE_ARTIFACTS_DIR:-$PWD/ci-artifacts}"
mkdir -p "$EVALPIPE_ARTIFACTS_DIR"
echo "== ruff"; ruff check evalpipe tests benchmarks
echo "== mypy --strict"; mypy
echo "== pytest"; python -m pytest --durations=15 "$@"
