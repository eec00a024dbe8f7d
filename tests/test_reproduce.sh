#!/bin/sh
# Exact reproductions (issue 13): calibration sequences given as rows, and
# perplexity on pre-tokenized ids.
#
# The reference number: main at c6e0858 (before issue 13), stories260K
# converted to a Hugging Face directory, calibrated on 16 windows of 128
# ids drawn (seed 7) from the first 50000 ids of the TinyStories excerpt,
# scored on its first 40 windows of 128:
#
#   slicegpt-stream run --device cpu --model st --calib-tokens s50k.u32 \
#     --nsamples 16 --seqlen 128 --seed 7 --eval tinystories_valid_first.txt \
#     --eval-seqlen 128 --eval-windows 40 --out o-main
#   -> perplexity ... dense 4.1989, sliced 17.9080
#
# The same 16 sequences written as rows (tests/calib_draw, today's sampling)
# and given back with --calib-layout rows --method reference must give that
# number again, and the same bytes. Needs the shared data; TAP.

. "$(dirname "$0")/tap.sh"

tap_workdir sgref
reference_ppl=17.9080

"$build/tools/sg-llama2c-to-hf" "$stories" "$work/st" --tokenizer "$tok" >/dev/null 2>&1
check $? "stories260K converted"
# the text's ids (BOS first), little-endian uint32; the first 50000
"$build/tools/sg-gguf-f32" --tokens "$work/st" "$text" >"$work/ids.txt" 2>"$work/err" &&
    perl -ne 'print pack("V", $_)' "$work/ids.txt" | head -c 200000 >"$work/s50k.u32"
check $? "the excerpt tokenized: $(wc -l <"$work/ids.txt") ids"
"$build/tests/calib_draw" "$work/s50k.u32" 512 16 128 7 "$work/rows.u32"
check $? "the 16 x 128 calibration windows drawn with seed 7, written as rows"

eval_opts="--eval $text --eval-seqlen 128 --eval-windows 40"
run() { "$sgs" run --device cpu --method reference --model "$work/st" --quiet $eval_opts "$@"; }
sliced_ppl() { sed -n 's/.*sliced \([0-9.]*\) (.*/\1/p' "$1"; }
same_model() {
    for f in "$1"/*.safetensors; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done
}

run --calib-tokens "$work/s50k.u32" --nsamples 16 --seqlen 128 --seed 7 --out "$work/drawn" \
    >"$work/drawn.log" 2>"$work/err"
[ "$(sliced_ppl "$work/drawn.log")" = "$reference_ppl" ]
check $? "drawn at random as before: sliced perplexity $(sliced_ppl "$work/drawn.log") (main: $reference_ppl)"

run --calib-tokens "$work/rows.u32" --calib-layout rows --nsamples 16 --seqlen 128 \
    --method reference --out "$work/rows" >"$work/rows.log" 2>"$work/err"
[ "$(sliced_ppl "$work/rows.log")" = "$reference_ppl" ]
check $? "the same sequences as rows, --method reference: $(sliced_ppl "$work/rows.log")$(cat "$work/err")"
same_model "$work/drawn" "$work/rows"
check $? "... and the same weights, byte for byte"

# rows must be exactly --nsamples x --seqlen, one line why
run --calib-tokens "$work/rows.u32" --calib-layout rows --nsamples 15 --seqlen 128 \
    --out "$work/bad" >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "not 15 rows x 128"
check $? "15 rows asked of a file of 16: refused in one line: $(cat "$work/err")"
run --calib "$text" --calib-layout rows --nsamples 16 --seqlen 128 --out "$work/bad" \
    >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "calib-tokens"
check $? "--calib-layout rows with a text: refused in one line"

# ppl on ids: a stream cut into windows scores as the text does (same
# ids, BOS first), and rows of those windows score the same
ppl_of() { sed -n 's/^perplexity \([0-9.]*\) .*/\1/p' "$1"; }
perl -ne 'print pack("V", $_)' "$work/ids.txt" >"$work/all.u32"
"$sgs" ppl --device cpu --model "$work/drawn" --text "$text" --seqlen 128 --max-windows 40 \
    --quiet >"$work/p-text" 2>/dev/null
"$sgs" ppl --device cpu --model "$work/drawn" --tokens "$work/all.u32" --seqlen 128 \
    --max-windows 40 --quiet >"$work/p-stream" 2>/dev/null
[ "$(ppl_of "$work/p-stream")" = "$(ppl_of "$work/p-text")" ] &&
    [ "$(ppl_of "$work/p-text")" = "$reference_ppl" ]
check $? "ppl --tokens (stream) = ppl --text = $(ppl_of "$work/p-stream")"
head -c $((40 * 128 * 4)) "$work/all.u32" >"$work/rows40.u32"
"$sgs" ppl --device cpu --model "$work/drawn" --tokens "$work/rows40.u32" --tokens-layout rows \
    --seqlen 128 --quiet >"$work/p-rows" 2>/dev/null
[ "$(ppl_of "$work/p-rows")" = "$reference_ppl" ]
check $? "ppl --tokens-layout rows: $(ppl_of "$work/p-rows")"
"$sgs" ppl --device cpu --model "$work/drawn" --tokens "$work/s50k.u32" --tokens-layout rows \
    --seqlen 1000 --quiet >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "rows"
check $? "rows longer than the context: refused in one line: $(cat "$work/err")"

tap_done
