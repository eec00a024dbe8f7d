#!/usr/bin/env bash
# Slices stories260K (shared data) twice, with options A and with options
# B, and compares the sliced models' perplexities: the GPU check's "same
# perplexity as the CPU path within 0.5%".
#
#   bench/slice-device-compare.sh BUILD_DIR [SPARSITY]
# Environment: A (default "--device cpu --eigh f64"), B (default
# "--device cuda --eigh mixed --cov mixed": the consumer-GPU choices),
# SG_DATA (shared data), TOL (0.005).
# Runs here too: B="--device cpu --eigh mixed" checks the script and the
# mixed eigensolver without a GPU.
# Exit status: 0 within TOL, 1 not (or a run failed).
set -u
build=$(cd "${1:?usage: slice-device-compare.sh BUILD_DIR [SPARSITY]}" && pwd)
sparsity=${2:-0.25}
a_opts=${A:---device cpu --eigh f64}
b_opts=${B:---device cuda --eigh mixed --cov mixed}
tol=${TOL:-0.005}
data=${SG_DATA:-$(dirname "$0")/../../shared/data}
text=$data/tinystories-valid-subset/tinystories_valid_first.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$build/tools/sg-llama2c-to-hf" "$data/stories260K/stories260K.bin" "$work/model" \
    --tokenizer "$data/stories260K/tok512.bin" || exit 1
head -c 400000 "$text" >"$work/calib.txt"
tail -c 200000 "$text" >"$work/eval.txt"

# one_run NAME OPTS: the sliced perplexity, printed; the log kept
one_run() {
    # shellcheck disable=SC2086 # options are words
    "$build/slicegpt-stream" run $2 --model "$work/model" --calib "$work/calib.txt" \
        --eval "$work/eval.txt" --nsamples 64 --seqlen 256 --sparsity "$sparsity" \
        --out "$work/$1" --quiet >"$work/$1.log" 2>&1 || { cat "$work/$1.log" >&2; return 1; }
    grep -E '^(slicing|GPU memory|time per stage)' "$work/$1.log" | sed "s/^/  $1: /" >&2
    sed -n 's/^perplexity on .*sliced \([0-9.]*\) .*/\1/p' "$work/$1.log"
}
pa=$(one_run a "$a_opts") || exit 1
pb=$(one_run b "$b_opts") || exit 1
awk -v a="$pa" -v b="$pb" -v tol="$tol" -v ao="$a_opts" -v bo="$b_opts" 'BEGIN {
    r = b / a - 1
    printf "stories260K sliced perplexity: %s with %s, %s with %s (%+.3f%%, tolerance %.2f%%)\n",
        a, ao, b, bo, 100 * r, 100 * tol
    exit (r < 0 ? -r : r) <= tol ? 0 : 1
}'
