#!/usr/bin/env bash
# Everything a lent GPU session does, in one device call (device tool: `bash bench/gpu_session.sh`):
# install without the registry, run the test suite compiled (no interpreter), python -m fusedattn,
# the benchmark sweep (FUSEDATTN_BENCH=quick by default: the goal cases), and the README table.
# Logs and the result JSON land in $OUT; commit bench/results/*.json from there afterwards.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/fusedattn-out}
mkdir -p "$OUT"
export FUSEDATTN_BENCH=${FUSEDATTN_BENCH:-quick}
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.draw --format=csv
  python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"; } \
  2>&1 | tee "$OUT/env.txt"
timeout 200 python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.log" | tail -15
timeout 120 python3 -m fusedattn 2>&1 | tee "$OUT/main.log"
FUSEDATTN_BENCH_OUT="$OUT/bench.json" timeout 400 python3 -m pytest bench --benchmark-only -q \
  -p no:cacheprovider --benchmark-disable-gc 2>&1 | tail -5 | tee "$OUT/bench.log"
[ -f "$OUT/bench.json" ] && cp "$OUT/bench.json" "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-gpu.json" \
  && python3 bench/make_table.py | tee "$OUT/table.md"
