#!/usr/bin/env bash
# What a lent GPU session does, in four device calls of under 10 minutes each (device tool):
#   bash bench/gpu_session.sh tests   install without the registry, the test suite compiled (no
#                                     interpreter)
#   bash bench/gpu_session.sh main    install, python -m fusedattn (errors, eager/compiled/fused table)
#   bash bench/gpu_session.sh bench   install, the block sweep (FUSEDATTN_BENCH=quick by
#                                     default: batch 64, bfloat16, channels_last), the table
#   bash bench/gpu_session.sh models  install, the ResNet-50 sweep (16 torch.compile runs), the
#                                     table and the plot
#   bash bench/gpu_session.sh timm    install, timm EfficientNet-B0 / MobileNetV3-Large with and without
#                                     their SE blocks (16 torch.compile runs; skipped without timm)
#   bash bench/gpu_session.sh timm-quick  the timm networks eager and fused (about 30-60 s), then
#                                     compiled until stopped (TIMM_COMPILED_S, 100 s: each network's
#                                     compile takes about 50 s); for a lease, in a call of its own
#                                     (the device tool brings back 8 files a call, round writes 8)
#   bash bench/gpu_session.sh chunks  the L2 chunk sweep (bench/chunk_sweep.py: SE and CBAM in CUDA graphs
#                                     with chunks of L2/8, /4, /2 at the batch-64 stage shapes, about 1-2
#                                     minutes); the fastest share per case and overall in chunk-sweep.json,
#                                     for kernels/config.GPUProfile.chunk_fraction (0.5 until measured)
#   bash bench/gpu_session.sh all     all five, for a machine without the 10-minute limit
#   bash bench/gpu_session.sh lease   one call for a 15-minute lease (under 9.5 minutes): main without
#                                     torch.compile, bench/host_profile.py with cProfile (1 minute), the
#                                     quick block sweep (interrupted at 3.3 minutes; rows are written as
#                                     they come), then the
#                                     kernel and model test files compiled on 12 workers (interrupted
#                                     at 3.2 minutes; log and junit kept)
#   bash bench/gpu_session.sh round   a 15-minute lease after the first (under 8 minutes): host profiles
#                                     with the lean launch path, without it (FUSEDATTN_FAST_LAUNCH=0), batch 1, the block sweep
#                                     of SE/ECA/CBAM (interrupted at 3.3 minutes), then the test files
#                                     in FUSEDATTN_TEST_FILES compiled on 12 workers (2 minutes)
# The test runs set TORCHINDUCTOR_COMPILE_THREADS=1: with inductor's compile-worker pool, pytest-xdist
# hung at the end of a run (H100 round 2) until the timeout, and the failure summary was lost.
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
if [ "$STAGE" = lease ]; then
  timeout -k 5 70 python3 -m fusedattn --no-compile 2>&1 | tee "$OUT/main.log"
  timeout -k 5 70 python3 bench/host_profile.py --top 8 --cprofile 30 > "$OUT/host.log" 2>&1; grep -v USDT "$OUT/host.log" | head -12
  # the L2-chunked plan of a graph capture, called eagerly: what the one-chunk rule of eager calls saves
  FUSEDATTN_L2_CHUNKS=1 timeout -k 5 40 python3 bench/host_profile.py --blocks se,cbam --top 0 > "$OUT/host-l2chunks.log" 2>&1
  # SIGINT: pytest still runs its session finish, so the rows measured so far are written
  FUSEDATTN_BENCH_OUT="$OUT/blocks.json" timeout -s INT -k 15 200 python3 -m pytest bench/test_bench_blocks.py \
    --benchmark-only -q -p no:cacheprovider --benchmark-disable-gc > "$OUT/blocks.log" 2>&1; tail -4 "$OUT/blocks.log"
  TORCHINDUCTOR_COMPILE_THREADS=1 timeout -s INT -k 15 190 python3 -m pytest -n 12 -v --tb=short -rfE -p no:cacheprovider --timeout 150 \
    --junitxml="$OUT/junit.xml" tests/test_simam.py tests/test_coord_attn.py tests/test_block_table.py tests/test_se.py tests/test_eca.py tests/test_cbam.py \
    tests/test_ultralytics_cbam.py tests/test_one_layer_gate.py tests/test_activations.py \
    tests/test_spatial_gate.py tests/test_sk.py tests/test_psa.py tests/test_mlp_gate.py tests/test_batch_outer.py \
    tests/test_one_launch.py tests/test_se_cooperative.py tests/test_residual_epilogue.py tests/test_cuda_graph.py \
    tests/test_compile.py tests/test_errors.py tests/test_dispatch.py tests/test_timm_compat.py tests/test_fast_launch.py \
    tests/test_models_convert.py tests/test_autocast_and_modes.py > "$OUT/tests.log" 2>&1
  tail -30 "$OUT/tests.log"
fi
if [ "$STAGE" = round ]; then
  timeout -k 5 70 python3 bench/host_profile.py --top 8 --cprofile 30 > "$OUT/host.log" 2>&1; grep -v USDT "$OUT/host.log" | head -12
  # every launch through Triton's JIT (kernels/launch.py's lean path off): what the lean path saves
  FUSEDATTN_FAST_LAUNCH=0 timeout -k 5 40 python3 bench/host_profile.py --blocks se,cbam --top 0 > "$OUT/host-jit-launch.log" 2>&1
  timeout -k 5 40 python3 bench/host_profile.py --shape 1,256,56,56 --blocks se,eca --top 0 > "$OUT/host-b1.log" 2>&1
  FUSEDATTN_BENCH_BLOCKS=${FUSEDATTN_BENCH_BLOCKS:-se,eca,cbam} FUSEDATTN_BENCH_OUT="$OUT/blocks.json" \
    timeout -s INT -k 15 200 python3 -m pytest bench/test_bench_blocks.py \
    --benchmark-only -q -p no:cacheprovider --benchmark-disable-gc > "$OUT/blocks.log" 2>&1; tail -4 "$OUT/blocks.log"
  TORCHINDUCTOR_COMPILE_THREADS=1 timeout -s INT -k 15 130 python3 -m pytest -n 12 -q --tb=line -rfE -p no:cacheprovider --timeout 120 \
    --junitxml="$OUT/junit.xml" ${FUSEDATTN_TEST_FILES:-tests} > "$OUT/tests.log" 2>&1
  tail -30 "$OUT/tests.log"
fi
if [ "$STAGE" = chunks ] || [ "$STAGE" = all ]; then
  timeout -k 5 300 python3 bench/chunk_sweep.py --out "$OUT/chunk-sweep.json" 2>&1 | tee "$OUT/chunk-sweep.log"
  [ -f "$OUT/chunk-sweep.json" ] && cp "$OUT/chunk-sweep.json" "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-chunk-sweep.json"
fi
if [ "$STAGE" = tests ] || [ "$STAGE" = all ]; then
  timeout 540 python3 -m pytest -q -p no:cacheprovider --durations=15 tests 2>&1 | tee "$OUT/tests.log" | tail -40
fi
if [ "$STAGE" = main ] || [ "$STAGE" = all ]; then
  timeout 540 python3 -m fusedattn 2>&1 | tee "$OUT/main.log"
fi
run_bench() {  # $1: the bench file, $2: the result file's suffix, then more pytest arguments
  local file=$1 suffix=$2
  shift 2
  FUSEDATTN_BENCH_OUT="$OUT/$suffix.json" timeout 540 python3 -m pytest "bench/$file" "$@" --benchmark-only -q \
    -p no:cacheprovider --benchmark-disable-gc 2>&1 | tail -5 | tee "$OUT/$suffix.log"
  [ -f "$OUT/$suffix.json" ] && cp "$OUT/$suffix.json" "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-$suffix.json" \
    && python3 bench/make_table.py | tee "$OUT/table-$suffix.md"
}
if [ "$STAGE" = bench ] || [ "$STAGE" = all ]; then
  run_bench test_bench_blocks.py blocks
  # the cost model's table with the measured times beside (calibration; the model itself is CPU work)
  model=$(ls bench/results/model-h100-*.json 2>/dev/null | tail -1)
  [ -n "$model" ] && python3 -m fusedattn.costmodel --table-from "$model" --readme > "$OUT/model-table.md" 2>&1
fi
if [ "$STAGE" = models ] || [ "$STAGE" = all ]; then
  run_bench test_bench_models.py models -k "not timm"
  python3 bench/plot.py -o "$OUT/plot.png" || true
fi
if [ "$STAGE" = timm ] || [ "$STAGE" = all ]; then   # needs timm on the machine (skipped without)
  run_bench test_bench_models.py timm-models -k timm
fi
if [ "$STAGE" = timm-quick ]; then   # SIGINT: pytest still writes the rows measured so far
  FUSEDATTN_BENCH_OUT="$OUT/timm-eager.json" timeout -s INT -k 15 ${TIMM_EAGER_S:-100} python3 -m pytest \
    bench/test_bench_models.py -k "timm and not compiled" --benchmark-only -q -p no:cacheprovider \
    --benchmark-disable-gc > "$OUT/timm-eager.log" 2>&1; tail -4 "$OUT/timm-eager.log"
  FUSEDATTN_BENCH_OUT="$OUT/timm-compiled.json" timeout -s INT -k 15 ${TIMM_COMPILED_S:-100} python3 -m pytest \
    bench/test_bench_models.py -k "timm and compiled" --benchmark-only -q -p no:cacheprovider \
    --benchmark-disable-gc > "$OUT/timm-compiled.log" 2>&1; tail -4 "$OUT/timm-compiled.log"
fi
