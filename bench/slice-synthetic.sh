#!/bin/sh
# Time per slicing stage on a synthetic Llama-shaped model of width D,
# side by side with the bare LAPACK/BLAS rates for the same sizes.
#
#   bench/slice-synthetic.sh [D] [LAYERS] [TOKENS]     (default 4096 2 4096)
#
# Run from the build directory after `make bench`. Not a test.
set -eu
D=${1:-4096}
layers=${2:-2}
tokens=${3:-4096}
heads=$((D / 128))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ffn=$((D * 8 / 3 / 256 * 256))
./tools/sg-synth --arch llama --dim "$D" --layers "$layers" --heads "$heads" \
    --kv-heads "$((heads / 4 > 0 ? heads / 4 : 1))" --ffn "$ffn" --vocab 32000 \
    --dtype bf16 --format hf --out "$work/model" >/dev/null
python3 -c "
import random, struct, sys
random.seed(1)
sys.stdout.buffer.write(struct.pack('<%dI' % $tokens, *[random.randrange(32000) for _ in range($tokens)]))
" > "$work/calib.u32"
echo "synthetic llama: D $D, FFN $ffn, $layers layers, $tokens calibration tokens"
./slicegpt-stream run --model "$work/model" --calib-tokens "$work/calib.u32" \
    --nsamples $((tokens / 512)) --seqlen 512 --sparsity 0.25 --out "$work/out" --quiet \
    2>&1 | grep -E "time per stage|parameters|activations" || true
./bench/bench_stages "$D"
