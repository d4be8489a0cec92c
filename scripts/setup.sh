#!/usr/bin/env bash
# Set up a fresh machine for minimax-rocm. Safe to run again (everything is
# skipped or a no-op when already there).
#   scripts/setup.sh            the package and what the demo needs
#   scripts/setup.sh --test     also the test tools and the compile toolchains
#                               (clang-19 + ROCm device libs for gfx942 checks)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# torch first, pinned to 2.13.0, the version the CPU suite is checked with
# (from an index that serves its CPU build the install stays small; an
# unpinned torch may pull a multi-GB CUDA build). A GPU machine's own
# torch (2.11+ CUDA/ROCm) satisfies the package's range and is left alone.
if ! $PY -c "import torch, sys; v = tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])); sys.exit(not ((2, 11) <= v < (2, 15)))" 2>/dev/null; then
  $PY -m pip install -q "torch==2.13.0"
fi
extras="triton"
[ $want_test = 1 ] && extras="triton,test,bench"
# --no-build-isolation: setup.py must see the installed torch to decide what
# to build (pure Python without a GPU toolkit).
MINIMAX_ROCM_BUILD_EXT=${MINIMAX_ROCM_BUILD_EXT:-} $PY -m pip install -q --no-build-isolation -e ".[$extras]"

if [ $want_test = 1 ]; then
  need=""
  for p in clang-19 lld-19 llvm-19 libamdhip64-dev rocm-device-libs; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
  done
  if [ -n "$need" ]; then
    SUDO=""
    [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
  fi
fi
