#!/usr/bin/env bash
# A GPU machine's checks from a source checkout: `python -m minimax_rocm check`
# (minimax_rocm/gpu_check.py: parts, environment, logs under $OUT).
#   bash scripts/gpu_check.sh [PART ...] [--op OP ...] [--dry-run]   (--help lists the parts)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m minimax_rocm check "$@"
