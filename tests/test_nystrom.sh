#!/bin/sh
# --method nystrom on the bundled real models (issue 13): at the same
# --target-size it must beat the reference on held-out text, on stories260K
# (Llama, RMSNorm, GQA) and on tinyopt-250K (OPT: LayerNorm, ReLU, biases,
# learned positions); the width it prints is the one config.json holds,
# it stores no shortcut and no more than the target, a killed run resumes
# to the same bytes, and a config.json that lies about the widths is one
# clear error. Needs the shared data; TAP.

. "$(dirname "$0")/tap.sh"

tap_workdir sgnystrom
opt="$data/tinyopt-250K"
"$build/tools/sg-llama2c-to-hf" "$stories" "$work/st" --tokenizer "$tok" >/dev/null 2>&1
check $? "stories260K converted"
# the first 60% of the excerpt calibrates, the rest is held out
lines=$(wc -l <"$text")
head -n $((lines * 6 / 10)) "$text" >"$work/calib.txt"
tail -n +$((lines * 6 / 10 + 1)) "$text" >"$work/eval.txt"
run() {
    "$sgs" run --device cpu --tokenizer "$tok" --calib "$work/calib.txt" --nsamples 32 \
        --seqlen 128 --target-size 0.8 --eval "$work/eval.txt" --eval-seqlen 128 --quiet "$@"
}
sliced_ppl() { sed -n 's/^perplexity on .*sliced \([0-9.]*\) .*/\1/p' "$1"; }
stored() { sed -n 's/^stored: \([0-9]*\) parameters.* of dense \([0-9]*\) .*/\1 \2/p' "$1"; }

for m in stories tinyopt; do
    model="$work/st"
    [ $m = tinyopt ] && model="$opt"
    run --model "$model" --method reference --out "$work/$m-ref" >"$work/$m-ref.log" 2>"$work/err"
    check $? "$m: the reference at --target-size 0.8$(cat "$work/err")"
    run --model "$model" --method nystrom --out "$work/$m-ny" >"$work/$m-ny.log" 2>"$work/err"
    check $? "$m: --method nystrom at --target-size 0.8$(cat "$work/err")"
    diag "$work/$m-ny.log"
    ref=$(sliced_ppl "$work/$m-ref.log") ny=$(sliced_ppl "$work/$m-ny.log")
    [ -n "$ref" ] && [ -n "$ny" ] && awk "BEGIN { exit !($ny < $ref) }"
    check $? "$m: held-out perplexity $ny with nystrom, $ref with the reference"

    # the width printed is the width written, in every block: a Llama
    # comes back as a plain Llama (intermediate_size), OPT's folded
    # LayerNorms in the per-layer format (d_ffn per block)
    f=$(sed -n 's/^residual stream kept .* MLP hidden width \([0-9]*\) of .*/\1/p' "$work/$m-ny.log")
    cfg=$(tr -d ' \t\n' <"$work/$m-ny/config.json")
    if [ $m = stories ]; then
        echo "$cfg" | grep -q "\"model_type\":\"llama\"" &&
            echo "$cfg" | grep -q "\"intermediate_size\":$f," && ! echo "$cfg" | grep -q slicegpt
        check $? "$m: a plain llama model, intermediate_size $f as printed, on the grid of 8 ($((f % 8)))"
    else
        written=$(echo "$cfg" | grep -o '"d_ffn":[0-9]*' | cut -d: -f2 | sort -u)
        layers=$(echo "$cfg" | grep -o '"d_ffn":[0-9]*' | wc -l)
        blocks=$(echo "$cfg" | grep -o '"d_in":[0-9]*' | wc -l)
        [ -n "$f" ] && [ "$written" = "$f" ] && [ "$layers" -eq "$blocks" ] && [ $((f % 8)) -eq 0 ] &&
            echo "$cfg" | grep -q '"residual_kept":true'
        check $? "$m: MLP hidden width $f printed, written for all $layers blocks, on the grid of 8"
    fi
    ! grep -q shortcut "$work/$m-ny"/*.json
    check $? "$m: no shortcut in the index"
    set -- $(stored "$work/$m-ny.log")
    [ $# -eq 2 ] && [ $((10 * $1)) -le $((8 * $2)) ]
    check $? "$m: stores $1 parameters, at most 0.8 x dense $2"
done

# the written model scores as the run said
"$sgs" ppl --device cpu --model "$work/stories-ny" --tokenizer "$tok" --text "$work/eval.txt" \
    --seqlen 128 --quiet >"$work/ppl" 2>/dev/null
p=$(sed -n 's/^perplexity \([0-9.]*\).*/\1/p' "$work/ppl")
[ -n "$p" ] && [ "$p" = "$(sliced_ppl "$work/stories-ny.log")" ]
check $? "ppl on the written model: $p, as run printed"

# a plain model has a GGUF form, which scores the same; an OPT model's
# folded LayerNorms have none: refused before any work
run --model "$work/st" --method nystrom --out "$work/g" --out-gguf "$work/g.gguf" \
    --gguf-type f32 >/dev/null 2>"$work/err"
check $? "--out-gguf with --method nystrom$(cat "$work/err")"
"$sgs" ppl --device cpu --model "$work/g.gguf" --tokenizer "$tok" --text "$work/eval.txt" \
    --seqlen 128 --quiet >"$work/ppl" 2>/dev/null
g=$(sed -n 's/^perplexity \([0-9.]*\).*/\1/p' "$work/ppl")
[ -n "$g" ] && [ "$g" = "$p" ]
check $? "the GGUF scores $g, as the Hugging Face directory ($p)"
run --model "$opt" --method nystrom --out "$work/og" --out-gguf "$work/og.gguf" >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "LayerNorm" && [ ! -e "$work/og" ] && [ ! -e "$work/og.gguf" ]
check $? "--out-gguf on OPT: $(cat "$work/err")"

# killed after block 2: the rerun resumes and writes the same bytes
SG_TEST_KILL_AT=block:1 run --model "$work/st" --method nystrom --out "$work/k" >/dev/null 2>&1
[ $? -eq 137 ] && [ -d "$work/k.tmp" ]
ok=$?
# nothing rotated: the state holds no D x D rotation (D = 64: 32768 bytes)
state=$(stat -c %s "$work/k.tmp/resume.state" 2>/dev/null || echo 0)
[ $ok -eq 0 ] && [ "$state" -gt 0 ] && [ "$state" -lt 32768 ]
check $? "killed after block 2: OUT.tmp left behind, its resume.state $state bytes (no identity rotation in it)"
run --model "$work/st" --method nystrom --out "$work/k" --resume >"$work/k.log" 2>"$work/err" &&
    grep -q resumed "$work/k.log"
ok=$?
for f in "$work/stories-ny"/*; do cmp -s "$f" "$work/k/$(basename "$f")" || ok=1; done
check $ok "... resumed, every file byte-identical$(cat "$work/err")"

# activations spilled to disk (a 1 KiB host budget): the same bytes as
# in memory at the same chunking (the statistics are summed chunk by chunk)
run --model "$work/st" --method nystrom --chunk-tokens 2048 --out "$work/mem" >/dev/null 2>&1
run --model "$work/st" --method nystrom --chunk-tokens 2048 --host-mem 1K --out "$work/disk" \
    >"$work/disk.log" 2>"$work/err"
ok=$?
grep -q "spilled [1-9]" "$work/disk.log" || ok=1
for f in "$work/mem"/*; do cmp -s "$f" "$work/disk/$(basename "$f")" || ok=1; done
check $ok "spilled to disk, the same bytes as in memory$(cat "$work/err")"

# a config.json that lies: a hidden width beyond the model's, a kept
# residual stream with a cut width
cp -r "$work/tinyopt-ny" "$work/bad"
sed -i 's/"d_ffn":[[:space:]]*[0-9]*/"d_ffn": 9999/' "$work/bad/config.json"
"$sgs" ppl --device cpu --model "$work/bad" --tokenizer "$tok" --text "$work/eval.txt" \
    --seqlen 128 --quiet >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "config.json.*d_ffn 9999"
check $? "d_ffn beyond the FFN width: $(cat "$work/err")"
cp "$work/tinyopt-ny/config.json" "$work/bad/config.json"
sed -i '0,/"d_mid":[[:space:]]*[0-9]*/s//"d_mid": 32/' "$work/bad/config.json"
"$sgs" ppl --device cpu --model "$work/bad" --tokenizer "$tok" --text "$work/eval.txt" \
    --seqlen 128 --quiet >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "residual stream was kept"
check $? "a kept residual stream with a cut width: $(cat "$work/err")"

# plan, without --method, plans what run does without it: nystrom, the
# same width and the same stored parameters
"$sgs" plan --model "$work/st" --target-size 0.8 >"$work/plan0" 2>/dev/null
f=$(sed -n 's/^residual stream kept .* MLP hidden width \([0-9]*\) of .*/\1/p' "$work/stories-ny.log")
planned=$(sed -n 's/^parameters: dense [0-9]*, stored when sliced \([0-9]*\) .*/\1/p' "$work/plan0")
grep -q "MLP hidden width $f of" "$work/plan0" && [ "$planned" = "$(stored "$work/stories-ny.log" | cut -d' ' -f1)" ]
check $? "plan (default method): width $f and $planned stored parameters, as run"
run --model "$work/st" --out "$work/default" >"$work/default.log" 2>/dev/null &&
    grep -q "(--method nystrom)" "$work/default.log"
check $? "run without --method prunes the MLPs (nystrom)"
run --model "$work/st" --embeddings keep --out "$work/default-r" >"$work/default-r.log" 2>/dev/null &&
    grep -q "(--method reference)" "$work/default-r.log"
check $? "... and with an option only a rotation has (--embeddings), slices (reference)"
run --model "$work/st" --eigh mixed --out "$work/default-e" >"$work/default-e.log" 2>/dev/null &&
    grep -q "(--method reference)" "$work/default-e.log"
check $? "... as with the eigensolver's --eigh (reference)"

# the planner counts the statistics; the filters and a uniform rotation
# refuse the method in one line
"$sgs" plan --model "$work/st" --method nystrom --target-size 0.8 >"$work/plan" 2>/dev/null
grep -q "MLP hidden width" "$work/plan" && grep -q "hidden units' correlation" "$work/plan"
check $? "plan --method nystrom: the width and the statistics' memory"
"$sgs" run --device cpu --model "$work/st" --tokenizer "$tok" --calib "$work/calib.txt" \
    --nsamples 16 --seqlen 64 --method nystrom --rotation uniform --out "$work/u" >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "nystrom" && [ ! -e "$work/u" ]
check $? "--method nystrom --rotation uniform: refused in one line, nothing written"
"$sgs" slice --method nystrom </dev/null >/dev/null 2>"$work/err"
[ $? -ne 0 ] && grep -q "only .run." "$work/err"
check $? "the slice filter refuses --method nystrom: $(cat "$work/err")"

tap_done
