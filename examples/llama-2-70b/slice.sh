#!/bin/sh
# Slice Llama-2-70B (a Hugging Face checkpoint you already have: 15 bf16
# safetensors shards and config.json) by 25% on one 24 GB GPU, the way the
# SliceGPT paper does: 128 x 2048 calibration tokens, perplexity on
# WikiText-2 test before and after.
#
#   examples/llama-2-70b/slice.sh MODEL_DIR CALIB_TEXT EVAL_TEXT OUT [HOST_MEM]
#
# First `plan` says, from config.json alone, what the run holds on the host
# and the GPU and how much activation data spills to disk; then `run`
# slices on the GPU (cuda: an error if there is none) under a 24 GiB cap,
# with the mixed-precision covariance and eigensolver where the card's
# float64 is slow, and writes bf16 weights (f32 would double the output
# to some 200 GB). Spilled activations go to $TMPDIR: give it room (plan
# says how much) on a fast disk.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
model=${1:?usage: slice.sh MODEL_DIR CALIB_TEXT EVAL_TEXT OUT [HOST_MEM]}
calib=${2:?calibration text (e.g. WikiText-2 train)}
eval_text=${3:?evaluation text (e.g. WikiText-2 test)}
out=${4:?output directory (must not exist)}
host_mem=${5:-32G}
"$here/slicegpt-stream" plan --model "$model" --host-mem "$host_mem" --gpu-mem 24G
exec "$here/slicegpt-stream" run --model "$model" --calib "$calib" --nsamples 128 \
    --seqlen 2048 --sparsity 0.25 --device cuda --gpu-mem 24G --host-mem "$host_mem" \
    --dtype bf16 --eval "$eval_text" --eval-seqlen 2048 --out "$out"
