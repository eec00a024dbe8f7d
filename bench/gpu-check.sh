#!/usr/bin/env bash
# The GPU check, in one run on a lent H100/H200 (about 8 minutes; every
# step has a time limit and the whole stays under BUDGET seconds):
#   1. configure --with-cuda=yes out of tree and build the library, the
#      backend tests, the program and the benchmarks;
#   2. tests/test_backend: every backend op on the GPU against the CPU;
#      tests/test_forward_ops: the block forward composed of CUDA ops
#      against forward.c, every architecture;
#   3. tests/test_eigh_mixed: the mixed eigensolver's accuracy on the CPU
#      and on the GPU (same driver, cuSOLVER/cuBLAS primitives);
#   4. tests/test_eigh_mixed --gpu 2048 4096: dsyevd vs ssyevd vs mixed
#      times on the GPU;
#   5. bench/slice-device-compare.sh: stories260K sliced by `run --device
#      cuda --eigh mixed`, its perplexity within 0.5% of `--device cpu`;
#      then its MLPs pruned by `--method nystrom` (the default) the same
#      way, where the GPU computes the hidden units again and the CPU
#      keeps them;
#   6. bench/slice-70b-block.sh: `run --device cuda --gpu-mem 24G` on a
#      synthetic one-block Llama-2-70B-shaped model, 128 x 2048 tokens:
#      the real pipeline's per-stage times, peak GPU memory, 80 blocks;
#   7. bench/bench_block_gpu: one Llama-2-70B-shaped block (D 8192, FFN
#      28672, 64/8 heads of 128, 128 x 2048 calibration tokens) through
#      every op of the slicing pipeline under a 24 GiB cap: per-stage
#      times, peak GPU memory, the 80-block extrapolation.
#
#   bench/gpu-check.sh [BUILD_DIR]        default /tmp/sg-gpu-check
# Environment: GPU_MEM (24G), JOBS (all cores), BUDGET (560 s),
# BENCH_ARGS (more bench options, e.g. --quick), SG_DATA (shared data).
# Everything printed also goes to $OUT/gpu-check.log when $OUT is set.
# Exit status: 0 all passed, 1 a step failed, 77 no GPU was found.
# Needs autoreconf where configure is absent (it is git-ignored); without
# autotools there, bring configure, Makefile.in, aclocal.m4, config.h.in
# and build-aux/ along. Through the device tool, from a checkout where
# `autoreconf -fi` has run:
#   mkdir -p shared/data && cp -r ../shared/data/stories260K \
#       ../shared/data/tinystories-valid-subset shared/data/      (2 MB)
#   run command="bench/gpu-check.sh" timeout_s=600 carry=["configure",
#       "Makefile.in", "aclocal.m4", "config.h.in", "build-aux", "shared"]
# ($OUT is set there, so the log comes back as gpu-check.log.)
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-/tmp/sg-gpu-check}
jobs=${JOBS:-$(nproc)}
budget=${BUDGET:-560}
gpu_mem=${GPU_MEM:-24G}
if [ -z "${SG_DATA:-}" ]; then
    SG_DATA=$src/../shared/data
    [ -d "$src/shared/data" ] && SG_DATA=$src/shared/data
fi
export SG_DATA
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu-check.log") 2>&1
fi
t_start=$(date +%s)
failed=0
no_gpu=0

left() { echo $((budget - ($(date +%s) - t_start))); }

# step NAME LIMIT CMD...: runs CMD under a time limit (never past the
# budget), prints its output and status, records failures
step() {
    local name=$1 limit=$2 rc t0
    shift 2
    local l; l=$(left)
    [ "$limit" -gt "$l" ] && limit=$l
    if [ "$limit" -le 5 ]; then
        echo "== $name: SKIPPED, the ${budget} s budget is spent"
        failed=1
        return 1
    fi
    echo "== $name (limit ${limit} s)"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - t0)) s"
    case $rc in
    0) ;;
    77) no_gpu=1 ;;
    124 | 137) echo "== $name: TIMED OUT"; failed=1 ;;
    *) failed=1 ;;
    esac
    return $rc
}

# a TAP program: fails on any "not ok" even if it exits 0
tap() {
    local name=$1 limit=$2 log
    shift 2
    log=$(mktemp)
    # shellcheck disable=SC2016 # expanded by the inner bash
    TAPLOG=$log step "$name" "$limit" bash -c 'set -o pipefail; "$@" | tee "$TAPLOG"' _ "$@"
    local rc=$?
    local bad; bad=$(grep -c '^not ok' "$log")
    local skips; skips=$(grep -c '# SKIP' "$log")
    echo "== $name: $(grep -c '^ok' "$log") ok, $bad not ok, $skips skipped"
    [ "$bad" -gt 0 ] && failed=1
    rm -f "$log"
    return $rc
}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | head -5
nvcc --version 2>/dev/null | tail -2
echo "cores: $(nproc), source: $src, build: $build"

if [ ! -x "$src/configure" ]; then
    step "autoreconf" 120 bash -c "cd '$src' && autoreconf -fi" || exit 1
fi
mkdir -p "$build"
cd "$build" || exit 1
if [ ! -f Makefile ]; then
    step "configure --with-cuda=yes" 120 "$src/configure" -q --with-cuda=yes || exit 1
fi
grep -q '^#define HAVE_CUDA 1' config.h || { echo "configure did not enable CUDA"; exit 1; }
step "build" 240 make -j"$jobs" tests/test_backend tests/test_eigh_mixed tests/test_forward_ops \
    bench/bench_block_gpu slicegpt-stream tools/sg-llama2c-to-hf tools/sg-synth || exit 1

tap "test_backend (every op, CPU and GPU)" 90 ./tests/test_backend
tap "test_forward_ops (block forward, CPU and GPU)" 60 ./tests/test_forward_ops
tap "test_eigh_mixed (accuracy, CPU and GPU)" 120 ./tests/test_eigh_mixed
tap "test_eigh_mixed --gpu 2048 4096 (times)" 150 ./tests/test_eigh_mixed --gpu 2048 4096
step "slice stories260K on the GPU and on the CPU" 120 "$src/bench/slice-device-compare.sh" .
step "prune stories260K's MLPs on the GPU and on the CPU (--method nystrom)" 120 \
    env A="--device cpu --method nystrom" B="--device cuda --method nystrom" \
    "$src/bench/slice-device-compare.sh" .
step "the real pipeline on one 70B-shaped block" 300 "$src/bench/slice-70b-block.sh" .
# shellcheck disable=SC2086
step "bench_block_gpu (one 70B block)" 400 ./bench/bench_block_gpu --gpu-mem "$gpu_mem" ${BENCH_ARGS:-}

echo "== total $(($(date +%s) - t_start)) s"
if [ "$no_gpu" = 1 ]; then
    echo "== NO GPU was found by the CUDA backend: nothing on the GPU was checked"
    exit 77
fi
[ "$failed" = 0 ] && echo "== all passed" || echo "== FAILED"
exit "$failed"
