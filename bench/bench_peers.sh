#!/bin/sh
# slicegpt-stream ppl against PyTorch/transformers and llama.cpp on the same
# windows of the default evaluation text, the same float32 weights and the
# same thread count (never part of make check).
#
#   bench/bench_peers.sh [WINDOWS] [ROUNDS] [THREADS]      (defaults 4 3 2)
#
# The default model (Q4_1) is rewritten as a float32 GGUF by tools/sg-gguf-f32;
# slicegpt-stream and llama.cpp read that file and transformers loads it with
# gguf_file=, so all three score identical weights. The windows are the token
# ids slicegpt-stream scores (sg-gguf-f32 --tokens), given as ids to the
# other two. torch, transformers, gguf, accelerate and llama-cpp-python come
# from PyPI into a scratch venv ($SG_PEERS_VENV, default in the cache; torch's
# PyPI wheel is about 0.5 GB plus its CUDA libraries, about 3 GB in all);
# an engine that cannot be installed is left out and said so. The engines
# alternate ROUNDS times; tokens/s is over the forward passes only (loading
# excluded). The sgemm rate is measured in the same run by bench_forward,
# with the kernels slicegpt-stream runs. Exit status 1 if the perplexities
# differ by more than 0.1%.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
windows=${1:-4}
rounds=${2:-3}
threads=${3:-2}
seqlen=512
. "$here/bench/peers_env.sh"
licenses=/usr/share/common-licenses
cat "$licenses/GFDL-1.3" "$licenses/MPL-2.0" "$licenses/Artistic" > "$work/eval.txt"

[ -x "$here/bench/bench_forward" ] || (cd "$here" && make -s bench/bench_forward)
"$here/tools/sg-gguf-f32" --tokens "$model" "$work/eval.txt" > "$work/ids.txt"

engines=sg
peers_have PyTorch "torch, transformers, gguf, accelerate" \
    "torch transformers gguf accelerate numpy" && engines="$engines torch"
peers_have llama.cpp llama_cpp llama-cpp-python && engines="$engines llama"

echo "$(uname -m), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); $windows windows of $seqlen tokens, $threads threads, $rounds rounds: $engines"
"$here/slicegpt-stream" --version | sed -n 2p
: > "$work/results"
r=1
while [ "$r" -le "$rounds" ]; do
    for e in $engines; do
        case $e in
        sg)
            OPENBLAS_NUM_THREADS=$threads "$here/slicegpt-stream" ppl --model "$f32" \
                --text "$work/eval.txt" --seqlen $seqlen --max-windows "$windows" 2>/dev/null |
                sed -n 's/^perplexity \([0-9.]*\) .*(\([0-9]*\) tokens\/s.*/sg tokens\/s \2 perplexity \1/p' \
                    > "$work/line" ;;
        *)
            "$venv/bin/python" "$here/bench/bench_peers.py" "$e" "$f32" "$work/ids.txt" \
                "$windows" $seqlen "$threads" 2>/dev/null | tail -1 > "$work/line" ;;
        esac
        echo "round $r: $(cat "$work/line")"
        cat "$work/line" >> "$work/results"
    done
    OPENBLAS_NUM_THREADS=$threads "$here/bench/bench_forward" "$f32" $((windows * seqlen)) $seqlen \
        2>/dev/null | grep -E '^(sgemm|forward)' | sed "s/^/round $r: /" | tee -a "$work/results"
    r=$((r + 1))
done

awk '
$1 ~ /^(sg|torch|llama)$/ { n[$1]++; v[$1, n[$1]] = $3; p[$1] = $5 }
$3 == "sgemm" { s[++ns] = $(NF-1) }
$3 == "forward:" { for (i = 1; i <= NF; i++) if ($i == "of" && $(i+1) == "sgemm") f[++nf] = $(i-1) }
function med(a, k, m,   i, j, t, b) {
    for (i = 1; i <= m; i++) b[i] = a[k, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (b[j] < b[i]) { t = b[i]; b[i] = b[j]; b[j] = t }
    mn = b[1]; return m % 2 ? b[(m + 1) / 2] : (b[m / 2] + b[m / 2 + 1]) / 2
}
END {
    for (e in n) { md[e] = med(v, e, n[e]); printf "%-6s tokens/s min %.0f median %.0f  perplexity %s\n", e, mn, md[e], p[e] }
    for (i = 1; i <= ns; i++) { sv[1, i] = s[i] } ; if (ns) printf "sgemm (1024^3, the tool'"'"'s kernels) median %.1f GFLOP/s\n", med(sv, 1, ns)
    for (i = 1; i <= nf; i++) { fv[1, i] = f[i] } ; if (nf) printf "bench_forward: forward at %.2f of that sgemm rate (median)\n", med(fv, 1, nf)
    if (("torch" in md) && md["torch"] > 0) printf "slicegpt-stream / PyTorch: %.2fx\n", md["sg"] / md["torch"]
    if (("llama" in md) && md["llama"] > 0) printf "slicegpt-stream / llama.cpp: %.2fx\n", md["sg"] / md["llama"]
    bad = 0
    for (e in p) if (e != "sg" && (p[e] / p["sg"] - 1 > 0.001 || p["sg"] / p[e] - 1 > 0.001)) {
        printf "perplexity of %s (%s) differs from slicegpt-stream (%s) by more than 0.1%%\n", e, p[e], p["sg"]; bad = 1 }
    if (!bad) print "perplexities agree to 0.1%"
    exit bad
}' "$work/results"
