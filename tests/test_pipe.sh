#!/bin/sh
# The stage filters piped together write the same model as the fused run,
# to the byte; a flipped byte anywhere in the pipe stops it with one clear
# checksum error naming the record, and leaves no model and no scratch.
#
#   slicegpt-stream load M | slicegpt-stream fold | slicegpt-stream capture ...
#     | slicegpt-stream cov | slicegpt-stream eig | slicegpt-stream slice ...
#     | slicegpt-stream write OUT
#
# Models: stories260K (Llama, real weights, its own tokenizer), and
# synthetic OPT (LayerNorm, learned positions, biases) and Phi-2 (parallel
# blocks) models written by sg-synth, calibrated with the same tokenizer.
# capture and slice run --quiet: their progress (test_progress.sh) would
# add lines to the one-line errors checked here.
# Needs the shared data ($SG_DATA); skipped without it. Prints TAP.

. "$(dirname "$0")/tap.sh"

tap_workdir sgpipe
# store directories are made under TMPDIR: a private one, to check that
# none is left behind
export TMPDIR="$work/scratch"
mkdir -p "$TMPDIR"

# Calibration: 24 samples of 64 tokens in chunks of about 300 tokens, so
# every signal spans several chunks.
calib="--calib $text --nsamples 24 --seqlen 64 --chunk-tokens 300"

# compare NAME MODEL TOKENIZER CAPTURE EIG SLICE WRITE RUN ZSTD: the fused
# run with options RUN, the pipe with each stage's own, then every output
# file compared.
compare() {
    name=$1 model=$2 tok_opt=$3 capture_opts=$4 eig_opts=$5 slice_opts=$6 write_opts=$7
    run_opts=$8 z=$9
    # the filters run on the CPU: so does the fused run they are held to
    "$sgs" run --device cpu --method reference --model "$model" $tok_opt $calib $run_opts --out "$work/$name-run" --quiet \
        >"$work/$name-run.log" 2>&1
    check $? "$name: fused run"
    "$sgs" load "$model" $tok_opt $z | "$sgs" fold $z | "$sgs" capture --quiet $calib $capture_opts $z |
        "$sgs" cov $z | "$sgs" eig $eig_opts $z | "$sgs" slice --quiet $slice_opts $z |
        "$sgs" write "$work/$name-pipe" $write_opts 2>"$work/$name-pipe.err"
    status=$?
    [ -s "$work/$name-pipe.err" ] && diag "$work/$name-pipe.err"
    check $status "$name: piped stages"
    (cd "$work/$name-run" && ls) >"$work/$name-run.files"
    (cd "$work/$name-pipe" 2>/dev/null && ls) >"$work/$name-pipe.files"
    if ! cmp -s "$work/$name-run.files" "$work/$name-pipe.files"; then
        not_ok "$name: the same files"
        return
    fi
    differ=0
    count=0
    for f in $(cat "$work/$name-run.files"); do
        count=$((count + 1))
        if ! cmp "$work/$name-run/$f" "$work/$name-pipe/$f" >/dev/null; then
            echo "# $f differs"
            differ=1
        fi
    done
    check $differ "$name: all $count files identical byte for byte (weights, index, config, tokenizer, eigenvalues)"
}

"$build/tools/sg-llama2c-to-hf" "$stories" "$work/stories" --tokenizer "$tok" &&
    "$build/tools/sg-synth" --arch opt --dim 64 --layers 3 --heads 4 --ffn 96 --vocab 512 \
        --seed 3 --format hf --out "$work/opt" &&
    "$build/tools/sg-synth" --arch phi --dim 64 --layers 2 --heads 4 --ffn 96 --vocab 512 \
        --seed 4 --format hf --out "$work/phi"
check $? "models prepared (stories260K converted, OPT and Phi-2 synthesized)"

# stories260K ties its head to its embeddings: by default both are kept
compare stories "$work/stories" "" "" "" "--sparsity 0.25" "" "--sparsity 0.25" ""
# the published method, and a width chosen by size
compare stories-slice "$work/stories" "" "" "" "--target-size 0.95 --embeddings slice" "" \
    "--target-size 0.95 --embeddings slice" ""
# zstd between the stages, the head sliced too, bf16 weights
# and another damping, given to eig as to run
compare opt "$work/opt" "--tokenizer $tok" "" "--damp 0.05" "--sparsity 0.3 --slice-head" \
    "--dtype bf16" "--sparsity 0.3 --slice-head --dtype bf16 --damp 0.05" "--zstd 3"
# the random-rotation control, another seed, another rounding
compare phi "$work/phi" "--tokenizer $tok" "--seed 7" "--random-rotation --seed 7" \
    "--sparsity 0.5 --round-interval 16" "" \
    "--seed 7 --random-rotation --sparsity 0.5 --round-interval 16" ""

# plan's width is the one run used (one function chooses it)
"$sgs" plan --method reference --model "$work/stories" --sparsity 0.25 >"$work/stories-plan.log"
ran=$(sed -n 's/^sliced width d = \([0-9]*\) .*/\1/p' "$work/stories-run.log")
planned=$(sed -n 's/^sliced width: d = \([0-9]*\) .*/\1/p' "$work/stories-plan.log")
[ -n "$ran" ] && [ "$ran" = "$planned" ]
check $? "plan gives the width run used: d = $planned (run: $ran)"
ran=$(sed -n 's/^stored: \([0-9]*\) parameters.*/\1/p' "$work/stories-run.log")
planned=$(sed -n 's/^parameters: dense [0-9]*, stored when sliced \([0-9]*\) .*/\1/p' "$work/stories-plan.log")
[ -n "$ran" ] && [ "$ran" = "$planned" ]
check $? "plan prints the stored parameters run printed: $planned (run: $ran)"

# The stream between each pair of stages, kept for dump.
"$sgs" load "$work/stories" | "$sgs" fold | tee "$work/folded.sgs" | "$sgs" capture --quiet $calib |
    tee "$work/captured.sgs" | "$sgs" cov | "$sgs" eig | tee "$work/eig.sgs" |
    "$sgs" slice --quiet --sparsity 0.25 | tee "$work/sliced.sgs" | "$sgs" write "$work/good"
check $? "the pipe again, its streams kept"
for s in folded captured eig sliced; do
    "$sgs" dump <"$work/$s.sgs" >"$work/$s.txt" || echo "# dump of $s failed"
done

# dump: every kind of record, and a clean exit for a complete stream
types=$(awk 'NR > 1 { print $5 }' "$work/sliced.txt" | sort -u | tr '\n' ' ')
[ "$types" = "block end file header spectrum tensor " ]
check $? "dump after slice: records of types $types"
types=$(awk 'NR > 1 { print $5 }' "$work/captured.txt" | sort -u | tr '\n' ' ')
[ "$types" = "act-ref block end file header tensor " ]
check $? "dump after capture: records of types $types"

# ---- corruption ----

# Byte offsets come from dump: the middle of a record's payload, or its header.
payload_middle() { awk -v r="$1" '$6 == r { print $3 + int($4 / 2); exit }' "$work/$2.txt"; }
record_start() { awk -v r="$1" '$6 == r { print $2 + 12; exit }' "$work/$2.txt"; }

# corrupt AT AFTER WANT WHAT: the pipe with the byte at AT flipped after
# stage AFTER; expects a non-zero pipeline status, exactly one line on
# stderr (matching WANT), no output model, no scratch left behind.
corrupt() {
    at=$1 after=$2 want=$3 what=$4
    flip="$build/tests/flip_byte $at"
    rm -rf "$work/bad" "$work/bad.tmp"
    case $after in
    fold)
        { "$sgs" load "$work/stories" | "$sgs" fold | $flip | "$sgs" capture --quiet $calib |
            "$sgs" cov | "$sgs" eig | "$sgs" slice --quiet --sparsity 0.25 | "$sgs" write "$work/bad"
        } 2>"$work/bad.err" ;;
    capture)
        { "$sgs" load "$work/stories" | "$sgs" fold | "$sgs" capture --quiet $calib | $flip |
            "$sgs" cov | "$sgs" eig | "$sgs" slice --quiet --sparsity 0.25 | "$sgs" write "$work/bad"
        } 2>"$work/bad.err" ;;
    eig)
        { "$sgs" load "$work/stories" | "$sgs" fold | "$sgs" capture --quiet $calib | "$sgs" cov |
            "$sgs" eig | $flip | "$sgs" slice --quiet --sparsity 0.25 | "$sgs" write "$work/bad"
        } 2>"$work/bad.err" ;;
    slice)
        { "$sgs" load "$work/stories" | "$sgs" fold | "$sgs" capture --quiet $calib | "$sgs" cov |
            "$sgs" eig | "$sgs" slice --quiet --sparsity 0.25 | $flip | "$sgs" write "$work/bad"
        } 2>"$work/bad.err" ;;
    esac
    status=$?
    lines=$(wc -l <"$work/bad.err")
    if [ $status -ne 0 ] && [ "$lines" -eq 1 ] && grep -q -- "$want" "$work/bad.err" &&
        [ ! -e "$work/bad" ] && [ ! -e "$work/bad.tmp" ] && [ -z "$(ls "$TMPDIR")" ]; then
        ok "$what: $(cat "$work/bad.err")"
    else
        diag "$work/bad.err"
        echo "# status $status, $lines lines, scratch: $(ls "$TMPDIR")"
        not_ok "$what"
    fi
}

at=$(payload_middle blk.1.ffn_up.weight folded)
corrupt "$at" fold \
    "^slicegpt-stream capture: stdin: stream record [0-9]* (tensor, blk.1.ffn_up.weight): checksum mismatch$" \
    "a byte flipped in a tensor between fold and capture"
at=$(record_start blk.2.attn_k.weight folded)
corrupt "$at" fold "^slicegpt-stream capture: stdin: stream record [0-9]*: header checksum mismatch$" \
    "a byte flipped in a record header between fold and capture"
at=$(payload_middle blk.3.ffn_down.weight captured)
corrupt "$at" capture \
    "^slicegpt-stream cov: stdin: stream record [0-9]* (tensor, blk.3.ffn_down.weight): checksum mismatch$" \
    "a byte flipped between capture and cov (capture stops waiting)"
at=$(payload_middle blk.0.attention_output eig)
corrupt "$at" eig \
    "^slicegpt-stream slice: stdin: stream record [0-9]* (spectrum, blk.0.attention_output): checksum mismatch$" \
    "a byte flipped in a spectrum between eig and slice"
at=$(awk '$5 == "rotation" && $6 == "blk.2.block_output" { print $3 + 1000; exit }' "$work/eig.txt")
corrupt "$at" eig \
    "^slicegpt-stream slice: stdin: stream record [0-9]* (rotation, blk.2.block_output): checksum mismatch$" \
    "a byte flipped in a rotation between eig and slice"
at=$(payload_middle blk.4.ffn_gate.weight sliced)
corrupt "$at" slice \
    "^slicegpt-stream write: stdin: stream record [0-9]* (tensor, blk.4.ffn_gate.weight): checksum mismatch$" \
    "a byte flipped between slice and write, at the last block"

# ---- a stage missing or failing upstream ----

rm -rf "$work/bad"
{ "$sgs" load "$work/stories" | head -c 300000 | "$sgs" fold | "$sgs" capture --quiet $calib |
    "$sgs" cov | "$sgs" eig | "$sgs" slice --quiet | "$sgs" write "$work/bad"; } 2>"$work/bad.err"
status=$?
[ $status -ne 0 ] && [ "$(wc -l <"$work/bad.err")" -eq 1 ] &&
    grep -q "^slicegpt-stream fold: stdin: stream truncated in record" "$work/bad.err" &&
    [ ! -e "$work/bad" ] && [ ! -e "$work/bad.tmp" ]
check $? "a stream cut short: $(cat "$work/bad.err")"

{ "$sgs" load "$work/stories" | "$sgs" fold | "$sgs" capture --quiet $calib | "$sgs" cov |
    "$sgs" eig | "$sgs" write "$work/bad"; } 2>"$work/bad.err"
status=$?
[ $status -ne 0 ] && grep -q "has not been through \`slicegpt-stream slice\`" "$work/bad.err" &&
    [ "$(wc -l <"$work/bad.err")" -eq 1 ] && [ -z "$(ls "$TMPDIR")" ]
check $? "a stage left out: $(cat "$work/bad.err")"

{ "$sgs" load "$work/stories" | "$sgs" fold | "$sgs" capture --quiet $calib --wait-timeout 1 |
    "$sgs" dump >/dev/null; } 2>"$work/bad.err"
status=$?
[ $status -ne 0 ] && grep -q "waited 1 s for .*/plan from slice" "$work/bad.err" &&
    [ -z "$(ls "$TMPDIR")" ]
check $? "capture with nothing downstream to answer gives up: $(head -1 "$work/bad.err")"

# ---- what cannot be done exactly is refused before any work ----

"$sgs" run --device cpu --model "$work/opt" --tokenizer "$tok" $calib --embeddings keep \
    --out "$work/bad" --quiet >/dev/null 2>"$work/bad.err"
status=$?
[ $status -eq 1 ] && [ "$(wc -l <"$work/bad.err")" -eq 1 ] && [ ! -e "$work/bad" ] &&
    [ ! -e "$work/bad.tmp" ] && grep -q "^slicegpt-stream: --embeddings keep: " "$work/bad.err"
check $? "--embeddings keep on a LayerNorm model: $(cat "$work/bad.err")"

# ---- the fused run's device choice ----

"$sgs" run --device tpu --model "$work/stories" $calib --out "$work/bad" 2>"$work/bad.err"
status=$?
[ $status -eq 2 ] && [ "$(wc -l <"$work/bad.err")" -eq 1 ] && [ ! -e "$work/bad" ] &&
    grep -q "^slicegpt-stream: --device: expected cpu, cuda or auto, got 'tpu'$" "$work/bad.err"
check $? "an unknown device: $(cat "$work/bad.err")"

# without a GPU, --device cuda is an error (with one, it slices)
"$sgs" run --device cuda --model "$work/stories" $calib --out "$work/cuda" --quiet \
    >/dev/null 2>"$work/bad.err"
status=$?
if [ $status -eq 0 ]; then
    [ -f "$work/cuda/config.json" ]
    check $? "--device cuda on this machine's GPU slices the model"
else
    [ $status -eq 2 ] && [ "$(wc -l <"$work/bad.err")" -eq 1 ] && [ ! -e "$work/cuda" ] &&
        grep -q "^slicegpt-stream: --device cuda: " "$work/bad.err"
    check $? "--device cuda without a GPU: $(cat "$work/bad.err")"
fi

tap_done
