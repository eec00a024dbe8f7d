#!/bin/sh
# The default job with one rotation for the whole network (--rotation
# uniform): SmolLM2-135M-Instruct sliced by 25% into a plain Llama of
# hidden size 432 that stock loaders run, written as a Hugging Face
# directory (transformers) and as GGUF (llama.cpp), and scored by our own
# ppl on the default job's evaluation text.
#
#   examples/uniform-export.sh [SPARSITY] [OUT] [GGUF_TYPE]
#
# Then, optionally (not part of make check; needs torch, transformers and
# llama-cpp-python, e.g. in a scratch venv):
#
#   python3 examples/uniform-ppl.py OUT OUT.gguf EVAL.txt
#
# scores the same files in transformers and llama.cpp; SG_KEEP_EVAL=DIR
# keeps the evaluation text there for it.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
sparsity=${1:-0.25}
out=${2:-$here/out/smollm2-135m-uniform}
gtype=${3:-f16}
model=$("$here/tools/fetch-default-model.sh")
licenses=/usr/share/common-licenses
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat "$licenses/GPL-3" "$licenses/GPL-2" "$licenses/LGPL-2.1" "$licenses/Apache-2.0" \
    > "$work/calib.txt"
cat "$licenses/GFDL-1.3" "$licenses/MPL-2.0" "$licenses/Artistic" > "$work/eval.txt"
if [ -n "${SG_KEEP_EVAL:-}" ]; then
    mkdir -p "$SG_KEEP_EVAL" && cp "$work/eval.txt" "$SG_KEEP_EVAL/eval.txt"
fi
rm -rf "$out" "$out.gguf"
mkdir -p "$(dirname "$out")"
"$here/slicegpt-stream" run --model "$model" --calib "$work/calib.txt" \
    --sparsity "$sparsity" --nsamples 32 --seqlen 512 --rotation uniform \
    --eval "$work/eval.txt" --eval-seqlen 512 --out "$out" \
    --out-gguf "$out.gguf" --gguf-type "$gtype"
echo "GGUF, scored by our own reader:"
"$here/slicegpt-stream" ppl --model "$out.gguf" --text "$work/eval.txt" --seqlen 512 --quiet
