#!/bin/sh
# Per-signal widths (issue 13, --method spectrum): the schedule a run
# prints is the one written in config.json, it stores no more than the
# reference plan at the same --target-size (and so no more than the
# target), its widths chain (block l's output width is block l+1's input
# width) on the round interval, and the sliced model scores. Model:
# stories260K as a Hugging Face directory; needs the shared data; TAP.

. "$(dirname "$0")/tap.sh"

tap_workdir sgsched
"$build/tools/sg-llama2c-to-hf" "$stories" "$work/st" --tokenizer "$tok" >/dev/null 2>&1
check $? "stories260K converted"
job="--calib $text --nsamples 24 --seqlen 128 --target-size 0.8"
run() { "$sgs" run --device cpu --model "$work/st" $job --quiet "$@"; }

run --method reference --out "$work/ref" >"$work/ref.log" 2>"$work/err"
check $? "the reference at --target-size 0.8"
run --method spectrum --out "$work/sp" >"$work/sp.log" 2>"$work/err"
check $? "--method spectrum at --target-size 0.8$(cat "$work/err")"
diag "$work/sp.log"

# the printed schedule, and config.json's slicegpt.layers
printed() { sed -n "s/^  $1: //p" "$work/sp.log"; }
written() { tr -d ' \t\n' <"$work/sp/config.json" | grep -o "\"$1\":[0-9]*" | cut -d: -f2 | xargs; }
[ -n "$(printed d_mid)" ] && [ "$(printed d_mid)" = "$(written d_mid)" ]
check $? "d_mid written as printed: $(written d_mid)"
[ -n "$(printed d_out)" ] && [ "$(printed d_out)" = "$(written d_out)" ]
check $? "d_out written as printed: $(written d_out)"

# block l+1 reads what block l writes; every cut width on the grid of 8
set -- $(written d_in)
shift
[ "$*" = "$(written d_out | cut -d' ' -f1-4)" ]
check $? "d_in[l+1] = d_out[l]: $*"
bad=0
for w in $(written d_mid) $(written d_out); do [ $((w % 8)) -eq 0 ] || bad=1; done
check $bad "every width a multiple of the round interval"

# stored parameters: within the reference's, which is within the target
stored() { sed -n 's/^stored: \([0-9]*\) parameters.* of dense \([0-9]*\) .*/\1 \2/p' "$1"; }
set -- $(stored "$work/sp.log") $(stored "$work/ref.log")
[ $# -eq 4 ] && [ "$1" -le "$3" ] && [ $((10 * $1)) -le $((8 * $2)) ]
check $? "stored $1 parameters: within the reference's $3 and 0.8 x dense $2"

"$sgs" ppl --device cpu --model "$work/sp" --text "$text" --seqlen 128 --max-windows 8 --quiet \
    >"$work/ppl" 2>/dev/null && grep -q '^perplexity [0-9]' "$work/ppl"
check $? "the scheduled model scores: $(head -1 "$work/ppl" | cut -d" " -f1-2)"

# --method fill: the reference's widths, widened with what the rounding
# left of the budget; never narrower, never above the target
run --method fill --out "$work/fill" >"$work/fill.log" 2>"$work/err"
check $? "--method fill at --target-size 0.8$(cat "$work/err")"
set -- $(stored "$work/fill.log") $(stored "$work/ref.log")
[ $# -eq 4 ] && [ "$1" -ge "$3" ] && [ $((10 * $1)) -le $((8 * $2)) ]
check $? "fill stores $1: at least the reference's $3, at most 0.8 x dense $2"
d=$(sed -n 's/^sliced width d = \([0-9]*\) .*/\1/p' "$work/ref.log")
bad=0
for w in $(tr -d ' \t\n' <"$work/fill/config.json" | grep -o '"d_\(mid\|out\)":[0-9]*' | cut -d: -f2); do
    [ "$w" -ge "$d" ] || bad=1
done
check $bad "no fill width below the reference's d = $d"

# --shared-basis: each block's output keeps its mid basis, and the MLP
# shortcut, the identity, is neither stored nor counted
run --method reference --shared-basis --out "$work/sh" >"$work/sh.log" 2>"$work/err"
check $? "--shared-basis at --target-size 0.8$(cat "$work/err")"
n_shared=$(tr -d ' \t\n' <"$work/sh/config.json" | grep -o '"shared_basis":true' | wc -l)
n_mlp=$(grep -o 'layers\.[0-9]*\.mlp_shortcut' "$work/sh/model.safetensors.index.json" | sort -u | wc -l)
[ "$n_shared" -eq 4 ] && [ "$n_mlp" -eq 1 ]
check $? "4 blocks share a basis (the last writes the kept embeddings' basis), 1 MLP shortcut stored ($n_shared, $n_mlp)"
"$sgs" ppl --device cpu --model "$work/sh" --text "$text" --seqlen 128 --max-windows 8 --quiet \
    >"$work/ppl" 2>/dev/null && grep -q '^perplexity [0-9]' "$work/ppl"
check $? "the shared-basis model scores: $(head -1 "$work/ppl" | cut -d" " -f1-2)"

# a killed run resumes to the same bytes: the first pass is made again and
# chooses the same widths, so the fingerprint matches (the kill points in
# the first pass fire before OUT.tmp exists: a rerun starts again)
SG_TEST_KILL_AT=head run --method spectrum --out "$work/k" >/dev/null 2>&1
[ $? -eq 137 ] && [ -d "$work/k.tmp" ]
check $? "killed before the head: OUT.tmp left behind"
same_model() {
    for f in "$1"/*; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done
}
run --method spectrum --out "$work/k" --resume >"$work/k.log" 2>"$work/err" &&
    grep -q resumed "$work/k.log" && same_model "$work/sp" "$work/k"
check $? "... resumed, every file byte-identical$(cat "$work/err")"

# the planner counts what the schedule holds; the filters and a random
# rotation refuse it in one line
"$sgs" plan --model "$work/st" --method spectrum --target-size 0.8 >"$work/plan" 2>/dev/null
grep -q "chosen by run" "$work/plan" && grep -q "spectrum" "$work/plan"
check $? "plan --method spectrum: widths chosen by run, the spectra counted"
run --method spectrum --rotation random --out "$work/bad" >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "rotation pca"
check $? "--method spectrum --rotation random: refused in one line"
"$sgs" slice --method spectrum </dev/null >/dev/null 2>"$work/err"
[ $? -ne 0 ] && grep -q "only .run." "$work/err"
check $? "the slice filter refuses --method spectrum: $(cat "$work/err")"

tap_done
