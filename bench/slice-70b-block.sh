#!/usr/bin/env bash
# The real pipeline (`slicegpt-stream run`) on one synthetic
# Llama-2-70B-shaped block: D 8192, FFN 28672, 64 heads, 8 KV heads of
# 128, vocabulary 32000, bf16 weights, 128 x 2048 calibration tokens, GPU
# memory capped at 24 GiB. Prints the time per stage, the peak GPU
# memory, and the 80-block extrapolation (80 x this run's total: an upper
# bound, since the embeddings and the head are counted in every block).
#
#   bench/slice-70b-block.sh BUILD_DIR
# Environment (for a dry run on a small machine, e.g. DIM=256 FFN=512
# HEADS=4 KV=2 SEQS=8 SEQLEN=128 DEVICE=cpu): DIM, FFN, HEADS, KV,
# HEAD_DIM, VOCAB, SEQS, SEQLEN, DEVICE (cuda), GPU_MEM (24G), EIGH
# (auto), COV (auto; mixed is what a consumer card would pick), METHOD
# (reference: SliceGPT; nystrom, the default method, prunes the MLP
# instead and ignores EIGH and COV), BLOCKS (80), WORK (a scratch
# directory with room for the model and the activations: about 4 GB of
# disk and 26 GB of RAM at full size).
set -eu
set -o pipefail # the run's status, not tee's
build=$(cd "${1:?usage: slice-70b-block.sh BUILD_DIR}" && pwd)
dim=${DIM:-8192} ffn=${FFN:-28672} heads=${HEADS:-64} kv=${KV:-8} hd=${HEAD_DIM:-128}
vocab=${VOCAB:-32000} seqs=${SEQS:-128} seqlen=${SEQLEN:-2048} blocks=${BLOCKS:-80}
work=$(mktemp -d "${WORK:-${TMPDIR:-/tmp}}/sg70b.XXXXXX")
trap 'rm -rf "$work"' EXIT

t0=$(date +%s)
"$build/tools/sg-synth" --arch llama --dim "$dim" --layers 1 --heads "$heads" --kv-heads "$kv" \
    --head-dim "$hd" --ffn "$ffn" --vocab "$vocab" --ctx "$seqlen" --dtype bf16 --format hf \
    --out "$work/model" >/dev/null
# random ids below the vocabulary, little-endian uint32 (perl: always there)
perl -e 'srand(1); my ($n, $v) = @ARGV; print pack("V*", map { int(rand($v)) } 1 .. $n)' \
    $((seqs * seqlen)) "$vocab" >"$work/calib.u32"
echo "synthetic block: D $dim, FFN $ffn, $heads/$kv heads of $hd, vocab $vocab;" \
    "$seqs x $seqlen calibration tokens; made in $(($(date +%s) - t0)) s"
"$build/slicegpt-stream" run --device "${DEVICE:-cuda}" --gpu-mem "${GPU_MEM:-24G}" \
    --method "${METHOD:-reference}" --eigh "${EIGH:-auto}" --cov "${COV:-auto}" --model "$work/model" --calib-tokens "$work/calib.u32" \
    --nsamples "$seqs" --seqlen "$seqlen" --sparsity 0.25 --spill-dir "$work" \
    --out "$work/out" --quiet | tee "$work/run.log"
awk -v blocks="$blocks" '/^time per stage/ {
    n = split($0, f, /[ ;]+/)
    for (i = 1; i <= n; i++) if (f[i] == "total") total = f[i + 1]
    sub(/s$/, "", total)
    printf "%d blocks: about %.0f s (%.1f min) at this run'"'"'s %.1f s per block\n",
        blocks, blocks * total, blocks * total / 60, total
}' "$work/run.log"
