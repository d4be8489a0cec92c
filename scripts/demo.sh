#!/usr/bin/env bash
# README's main job: set up (idempotent), then run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m minimax_rocm demo "$@"
