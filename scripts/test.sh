#!/usr/bin/env bash
# README's test command: set up (idempotent), then run the CPU test suite.
# GPU tests (-m gpu / multigpu) skip here with their reason printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export TRITON_DEFAULT_FP_FUSION=${TRITON_DEFAULT_FP_FUSION:-1}
set +e
python3 -m pytest -q -n "${PYTEST_WORKERS:-2}" "$@"
rc=$?
set -e
# pytest's 5 is "no tests collected": a failure here, never a pass.
[ $rc = 5 ] && echo "test.sh: no tests collected" >&2
exit $rc
