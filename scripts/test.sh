#!/usr/bin/env bash
# README's test command: set up (idempotent), then run the CPU test suite,
# then the vLLM engine tests (tests/vllm_engine) in their isolated vLLM
# environment (scripts/vllm_env.sh). GPU tests (-m gpu / multigpu) skip here
# with their reason printed. MINIMAX_ROCM_SKIP_VLLM=1 leaves out the second part.
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
if [ "${MINIMAX_ROCM_SKIP_VLLM:-0}" != 1 ] && [ $# = 0 ]; then
  vpy=$(bash scripts/vllm_env.sh)
  set +e
  "$vpy" -m pytest -q tests/vllm_engine
  vrc=$?
  set -e
  [ $vrc = 5 ] && echo "test.sh: no vLLM engine tests collected" >&2
  [ $rc = 0 ] && rc=$vrc
fi
exit $rc
