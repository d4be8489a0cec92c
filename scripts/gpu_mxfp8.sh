#!/usr/bin/env bash
# Issue 7 item 1 (MXFP8 quantisation) on a GPU machine, in one go: build the
# native extension (JIT), the GPU tests of hip + Triton quant/dequant, then
# `bench --op mxfp8_quant` with GB/s per row. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
export MINIMAX_ROCM_JIT=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/mmr_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
t0=$(date +%s)
python3 -c "from minimax_rocm.native import ext; m = ext.load(verbose=True); print(m is not None, ext.load_error())" \
    > "$OUT/build.log" 2>&1
tail -3 "$OUT/build.log"
echo "build: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_mxfp8_quant.py 2>&1 | tee "$OUT/pytest_mxfp8.log" | tail -30
echo "tests: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
python3 -m minimax_rocm bench --op mxfp8_quant --json "$OUT/bench_mxfp8.json" 2>&1 | tee "$OUT/bench_mxfp8.log"
python3 - "$OUT/bench_mxfp8.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = d["rows"] if isinstance(d, dict) else d
print("case | impl | us | GB/s | % roof | x vs torch")
for r in rows:
    print(f"{r['case']} | {r['impl']} | {r['us']:.2f} | {r['bytes'] / r['us'] / 1e3:.0f} | "
          f"{100 * r['pct_roofline']:.0f}% | {r['ratio']:.1f}")
PY
echo "bench: $(( $(date +%s) - t0 )) s"
