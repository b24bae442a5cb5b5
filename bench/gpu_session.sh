#!/usr/bin/env bash
# What a lent GPU session does, in two device calls of under 10 minutes each (device tool):
#   bash bench/gpu_session.sh tests   install without the registry, the test suite compiled (no
#                                     interpreter), python -m fusedattn
#   bash bench/gpu_session.sh bench   install, the benchmark sweep (FUSEDATTN_BENCH=quick by
#                                     default: batch 64, bfloat16, channels_last), the table
#   bash bench/gpu_session.sh all     both, for a machine without the 10-minute limit
# Logs and the result JSON land in $OUT; commit bench/results/*.json from there afterwards and
# run `python bench/make_table.py --readme`.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/fusedattn-out}
STAGE=${1:-all}
mkdir -p "$OUT"
export FUSEDATTN_BENCH=${FUSEDATTN_BENCH:-quick}
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.draw --format=csv
  python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"; } \
  2>&1 | tee "$OUT/env.txt"
if [ "$STAGE" = tests ] || [ "$STAGE" = all ]; then
  timeout 420 python3 -m pytest -q -x -p no:cacheprovider --durations=15 tests 2>&1 | tee "$OUT/tests.log" | tail -25
  timeout 120 python3 -m fusedattn 2>&1 | tee "$OUT/main.log"
fi
if [ "$STAGE" = bench ] || [ "$STAGE" = all ]; then
  FUSEDATTN_BENCH_OUT="$OUT/bench.json" timeout 500 python3 -m pytest bench --benchmark-only -q \
    -p no:cacheprovider --benchmark-disable-gc 2>&1 | tail -5 | tee "$OUT/bench.log"
  [ -f "$OUT/bench.json" ] && cp "$OUT/bench.json" "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-gpu.json" \
    && python3 bench/make_table.py | tee "$OUT/table.md"
fi
