#!/bin/sh
# Slicing the default model with slicegpt-stream run --method reference
# (SliceGPT itself, not the default method) against the same
# SliceGPT computation written in plain PyTorch (bench/bench_slice_peers.py),
# on the same float32 weights, the same calibration windows and the same
# thread count (never part of make check).
#
#   bench/bench_slice_peers.sh [ROUNDS] [THREADS] [NSAMPLES] [SPARSITY]   (defaults 3 2 32 0.25)
#
# The windows are the ones `run --calib` samples (tools/sg-gguf-f32 --calib,
# seed 42, 512 tokens each) from the default job's calibration text. Timed:
# the SliceGPT computation (norm folding, calibration forward passes,
# covariances, eigendecompositions, rotations and slicing, all layers):
# slicegpt-stream's per-stage times without load and write, and the
# PyTorch script's total (model loading excluded, nothing written). The
# two engines alternate ROUNDS times; min and median are printed. torch
# and transformers come from PyPI into the scratch venv bench_peers.sh uses.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
threads=${2:-2}
nsamples=${3:-32}
sparsity=${4:-0.25}
seqlen=512
. "$here/bench/peers_env.sh"
licenses=/usr/share/common-licenses
cat "$licenses/GPL-3" "$licenses/GPL-2" "$licenses/LGPL-2.1" "$licenses/Apache-2.0" \
    > "$work/calib.txt"

"$here/tools/sg-gguf-f32" --calib "$model" "$work/calib.txt" "$nsamples" $seqlen 42 > "$work/ids.txt"

engines=sg
peers_have PyTorch "torch, transformers, gguf" "torch transformers gguf accelerate numpy" &&
    engines="$engines torch"

echo "$(uname -m), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); $nsamples x $seqlen calibration tokens, sparsity $sparsity, $threads threads, $rounds rounds: $engines"
"$here/slicegpt-stream" --version | sed -n 2p
: > "$work/results"
r=1
while [ "$r" -le "$rounds" ]; do
    for e in $engines; do
        case $e in
        sg)
            t0=$(date +%s.%N)
            OPENBLAS_NUM_THREADS=$threads "$here/slicegpt-stream" run --quiet --method reference \
                --model "$f32" \
                --calib "$work/calib.txt" --nsamples "$nsamples" --seqlen $seqlen \
                --sparsity "$sparsity" --out "$work/out" > "$work/run.out"
            t1=$(date +%s.%N)
            # time per stage: load Xs fold Xs capture Xs covariance Xs eigensolve Xs rotate/slice Xs write Xs; total Xs
            sed -n 's/^time per stage: //p' "$work/run.out" | sed 's/\([0-9]\)s/\1/g; s/;//' | awk -v wall="$(awk "BEGIN { print $t1 - $t0 }")" '
                { for (i = 1; i < NF; i += 2) v[$i] = $(i + 1)
                  slice = v["fold"] + v["capture"] + v["covariance"] + v["eigensolve"] + v["rotate/slice"]
                  printf "sg slice seconds %.2f capture %.2f covariance %.2f eigensolve %.2f rotate %.2f load %.2f write %.2f wall %.2f\n",
                      slice, v["capture"], v["covariance"], v["eigensolve"], v["rotate/slice"], v["load"], v["write"], wall }' \
                > "$work/line"
            rm -rf "$work/out" ;;
        torch)
            "$venv/bin/python" "$here/bench/bench_slice_peers.py" "$f32" "$work/ids.txt" "$sparsity" \
                "$threads" 2>/dev/null | grep '^torch slice' > "$work/line" ;;
        esac
        echo "round $r: $(cat "$work/line")"
        cat "$work/line" >> "$work/results"
    done
    r=$((r + 1))
done

awk '
$1 ~ /^(sg|torch)$/ { n[$1]++; v[$1, n[$1]] = $4 }
END {
    for (e in n) {
        k = n[e]
        for (i = 1; i <= k; i++) a[i] = v[e, i]
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        med = k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
        printf "%-6s slicing seconds: min %.2f median %.2f over %d rounds\n", e, a[1], med, k
        mn[e] = a[1]; md[e] = med
    }
    if (("sg" in mn) && ("torch" in mn))
        printf "torch / slicegpt-stream: %.2fx (min), %.2fx (median)\n", mn["torch"] / mn["sg"], md["torch"] / md["sg"]
}' "$work/results"
