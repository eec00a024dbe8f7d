#!/bin/sh
# A hostile or unlucky user: no file of theirs is ever deleted, two runs
# to one --out never mix, a stuck pipe says why, a replayed stream says
# why, and bad options or inputs stop with one line before any work.
# (issue 10; each case failed on main before the fix.)
#
# Model: stories260K converted to a Hugging Face directory (D = 64, 512
# positions). Needs the shared data ($SG_DATA); skipped without it. TAP.

. "$(dirname "$0")/tap.sh"

tap_workdir sgsafety
export TMPDIR="$work/scratch"
mkdir -p "$TMPDIR"

"$build/tools/sg-llama2c-to-hf" "$stories" "$work/m" --tokenizer "$tok" >/dev/null 2>&1
check $? "stories260K converted"
m="$work/m"
calib="--calib $text --nsamples 24 --seqlen 64"
run() { "$sgs" run --device cpu --model "$m" $calib --quiet "$@"; }
o="$work/o"
mkdir -p "$o"

# ---- 1. OUT.tmp: never delete what we did not make ----

mkdir "$work/victim" && echo precious >"$work/victim/keep.txt"
ln -s ../victim "$o/sym.tmp"
run --out "$o/sym" >/dev/null 2>"$work/err"
status=$?
[ $status -ne 0 ] && [ -f "$work/victim/keep.txt" ] && [ ! -e "$o/sym" ] &&
    one_line "$work/err" "sym.tmp: exists"
check $? "a symlinked OUT.tmp is refused and what it points to is kept: $(cat "$work/err")"

mkdir "$o/user.tmp" && echo mine >"$o/user.tmp/notes.txt"
run --out "$o/user" >/dev/null 2>"$work/err"
status=$?
[ $status -ne 0 ] && [ -f "$o/user.tmp/notes.txt" ] && [ ! -e "$o/user" ] &&
    one_line "$work/err" "not made by slicegpt-stream"
check $? "a user's OUT.tmp directory is refused, its files kept: $(cat "$work/err")"

# a killed run's OUT.tmp (it carries the marker) is ours: cleaned and reused
mkdir "$o/stale.tmp" && : >"$o/stale.tmp/.slicegpt-stream-partial" &&
    echo junk >"$o/stale.tmp/model-00000-of-00004.safetensors"
run --out "$o/stale" >/dev/null 2>"$work/err"
check $? "a killed run's OUT.tmp is reused"
[ -f "$o/stale/config.json" ] && [ ! -e "$o/stale.tmp" ] && [ ! -e "$o/stale/.slicegpt-stream-partial" ]
check $? "... and the model is complete, without the marker"

# ---- 2. two runs to one --out ----

"$sgs" run --device cpu --model "$m" --calib "$text" --nsamples 400 --seqlen 256 --quiet \
    --out "$o/both" >"$work/a.log" 2>&1 &
a=$!
i=0
while [ ! -d "$o/both.tmp" ] && [ $i -lt 400 ]; do sleep 0.01; i=$((i + 1)); done
run --out "$o/both" >/dev/null 2>"$work/err"
b=$?
wait $a
astatus=$?
[ $b -ne 0 ] && one_line "$work/err" "another slicegpt-stream run is writing" && [ $astatus -eq 0 ] &&
    grep -q '"num_hidden_layers"' "$o/both/config.json" && [ ! -e "$o/both.tmp" ]
check $? "a second run to the same --out fails with one line, the first finishes: $(cat "$work/err")"

# ---- 8. --out forms, checked before any work ----

run --out "$o/slash/" >/dev/null 2>"$work/err"
[ $? -eq 0 ] && [ -f "$o/slash/config.json" ] && [ ! -e "$o/slash/.tmp" ]
check $? "--out dir/ with a trailing slash works"

ln -s "$work/nowhere" "$o/dangle"
run --out "$o/dangle" >"$work/out" 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "already exists (a symbolic link)" && [ ! -s "$work/out" ] &&
    [ ! -e "$work/nowhere" ]
check $? "a dangling-symlink --out is refused before any work: $(cat "$work/err")"

# ---- 4. a replayed stream ----

"$sgs" load "$m" | "$sgs" fold | "$sgs" capture $calib | tee "$work/captured.sgs" | "$sgs" cov |
    "$sgs" eig | tee "$work/eig.sgs" | "$sgs" slice --sparsity 0.25 | "$sgs" write "$o/piped" 2>"$work/err"
check $? "the pipe, its streams saved"
"$sgs" cov <"$work/captured.sgs" >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "^slicegpt-stream cov: .*cannot be replayed"
check $? "cov on a saved capture says why it fails: $(cat "$work/err")"
"$sgs" slice <"$work/eig.sgs" >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "^slicegpt-stream slice: .*cannot be replayed"
check $? "slice on a saved eig stream says why it fails: $(cat "$work/err")"

# ---- 3. something that buffers between capture and cov ----

if command -v timeout >/dev/null 2>&1; then
    start=$(date +%s)
    timeout 120 sh -c "\"$sgs\" load \"$m\" | \"$sgs\" fold |
        \"$sgs\" capture $calib --stall-timeout 2 | dd bs=64M iflag=fullblock 2>/dev/null |
        \"$sgs\" cov | \"$sgs\" eig | \"$sgs\" slice | \"$sgs\" write \"$o/stuck\"" 2>"$work/err"
    status=$?
    took=$(($(date +%s) - start))
    [ $status -ne 0 ] && [ $status -ne 124 ] && [ $took -lt 60 ] &&
        grep -q "^slicegpt-stream capture: .*holds the stream back" "$work/err" &&
        [ ! -e "$o/stuck" ] && [ "$(wc -l <"$work/err")" -eq 1 ]
    check $? "a buffer between capture and cov stops the pipe in ${took}s with one line: $(cat "$work/err")"
else
    ok "# SKIP no timeout(1)"
fi

# ---- 5. --eval-seqlen capped at the context, checked before writing ----

run --out "$o/eval" --sparsity 0.25 --eval "$text" --eval-seqlen 100000 --eval-windows 2 \
    >"$work/out" 2>"$work/err"
[ $? -eq 0 ] && grep -q "windows of 513)" "$work/out"
check $? "run --eval-seqlen 100000 is capped at the context (512 + 1, as in ppl)"
dense_run=$(sed -n 's/^perplexity on .*: dense \([0-9.]*\), sliced.*/\1/p' "$work/out")
"$sgs" ppl --device cpu --model "$m" --text "$text" --seqlen 100000 --max-windows 2 >"$work/ppl" 2>&1
[ -n "$dense_run" ] && grep -q "^perplexity $dense_run " "$work/ppl"
check $? "... and gives ppl's dense perplexity ($dense_run)"

# ---- 6. too little calibration ----

printf 'hi\n' >"$work/hi.txt"
"$sgs" run --device cpu --model "$m" --calib "$work/hi.txt" --nsamples 8 --seqlen 4 --quiet --out "$o/hi" >"$work/out" \
    2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "fewer than the hidden size D = 64" && [ ! -e "$o/hi" ] &&
    [ ! -e "$o/hi.tmp" ]
check $? "calibration below D tokens is refused: $(cat "$work/err")"
"$sgs" run --device cpu --model "$m" --calib "$text" --nsamples 2 --seqlen 64 --quiet \
    --out "$o/few" >"$work/out" 2>"$work/err"
[ $? -eq 0 ] && one_line "$work/err" "warning: .*only 128 calibration tokens" &&
    grep -q "on 128 tokens (2 x 64)" "$work/out"
check $? "calibration below 8 D tokens warns, the summary counts what there is: $(cat "$work/err")"

# ---- 7. control bytes from input files are escaped ----

esc=$(printf '\033')
mkdir "$work/bad-model" && cp "$m/config.json" "$work/bad-model/" &&
    printf '{"a%s[2Jb": {"dtype": "Z9", "shape": [1], "data_offsets": [0, 4]}}' "\\u001b" >"$work/hdr"
len=$(wc -c <"$work/hdr")
python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<Q', $len))" \
    >"$work/bad-model/model.safetensors" 2>/dev/null &&
    cat "$work/hdr" >>"$work/bad-model/model.safetensors" &&
    printf '\0\0\0\0' >>"$work/bad-model/model.safetensors"
"$sgs" ppl --device cpu --model "$work/bad-model" --text "$text" >/dev/null 2>"$work/err"
[ $? -ne 0 ] && [ "$(wc -l <"$work/err")" -eq 1 ] && ! grep -q "$esc" "$work/err" &&
    grep -q 'a\\x1b\[2Jb' "$work/err"
check $? "an ESC in a tensor name is escaped in the message: $(cat "$work/err")"

cp -r "$m" "$work/esc${esc}[31mmodel"
"$sgs" load "$work/esc${esc}[31mmodel" | "$sgs" dump >"$work/out" 2>"$work/err"
! grep -q "$esc" "$work/out" && grep -q 'esc\\x1b\[31mmodel' "$work/out"
check $? "dump escapes control bytes from the stream"

# ---- 8. smaller ones ----

run --out "$o/h0" --host-mem 0 >/dev/null 2>"$work/err"
[ $? -eq 2 ] && one_line "$work/err" "--host-mem: must be above 0"
check $? "--host-mem 0 is refused: $(cat "$work/err")"

run --out "$o/r64" --sparsity 0.25 --round-interval 64 >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "d = 64 of D = 64: nothing would be sliced" && [ ! -e "$o/r64" ]
check $? "a round interval that slices nothing is refused: $(cat "$work/err")"

run --out "$o/sp" --spill-dir "$work/no/such/dir" >/dev/null 2>"$work/err"
[ $? -eq 2 ] && one_line "$work/err" "no such directory" && [ ! -e "$work/no" ]
check $? "a missing --spill-dir is refused, not created: $(cat "$work/err")"

"$sgs" run --model "$m" --calib "$text" --calib-tokens "$text" --out "$o/ct" >/dev/null 2>"$work/err"
[ $? -eq 2 ] && one_line "$work/err" "give --calib or --calib-tokens, not both"
check $? "--calib with --calib-tokens says why: $(cat "$work/err")"

mkdir "$work/m0" && cp "$m"/* "$work/m0/" &&
    sed 's/"max_position_embeddings":[[:space:]]*[0-9]*/"max_position_embeddings": 0/' "$m/config.json" \
        >"$work/m0/config.json"
"$sgs" ppl --device cpu --model "$work/m0" --text "$text" >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "m0/config.json: max_position_embeddings: 0: must be at least 1"
check $? "max_position_embeddings 0 is refused naming the file: $(cat "$work/err")"

mkdir "$work/h0" && cp "$m"/* "$work/h0/" &&
    sed 's/"num_attention_heads":[[:space:]]*[0-9]*/"num_attention_heads": 0/' "$m/config.json" \
        >"$work/h0/config.json"
"$sgs" ppl --device cpu --model "$work/h0" --text "$text" >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "num_attention_heads: 0: must be at least 1"
check $? "heads = 0 says so: $(cat "$work/err")"

[ -z "$(ls "$TMPDIR")" ]
check $? "no scratch left behind"

tap_done
