#!/bin/sh
# Resume (issue 10): a run killed by SIGKILL at any point continues where
# it stopped and writes the same bytes as a run never interrupted; a
# resume of another job (other options, a changed model file) is refused
# with one line and leaves the killed run's files in place.
#
# The kill points come from the test hook SG_TEST_KILL_AT (stages/resume.h):
# "embeddings", "block:L" (block L's shard and the resume state written),
# "mid:L" (inside block L, after its first capture), "head" (before the
# head's shard), "write" (the index written, config not yet).
#
# Model: stories260K converted to a Hugging Face directory (5 blocks,
# D = 64). Needs the shared data ($SG_DATA); skipped without it. TAP.

. "$(dirname "$0")/tap.sh"

tap_workdir sgresume
export TMPDIR="$work/scratch"
mkdir -p "$TMPDIR"

"$build/tools/sg-llama2c-to-hf" "$stories" "$work/m" --tokenizer "$tok" >/dev/null 2>&1
check $? "stories260K converted"
m="$work/m"
job="--calib $text --nsamples 24 --seqlen 64 --chunk-tokens 256 --sparsity 0.25"
run() { "$sgs" run --device cpu --model "$m" $job --quiet "$@"; }

# same_model A B: the same file names, every file byte-identical
same_model() {
    [ "$(cd "$1" && ls -A)" = "$(cd "$2" && ls -A)" ] || return 1
    for f in "$1"/*; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done
}

run --out "$work/ref" >/dev/null 2>"$work/err"
check $? "an uninterrupted run"

# killed (exit 137: SIGKILL) at `point`, then resumed; extra options for both
killed_and_resumed() {
    point=$1
    shift
    out="$work/o-$(echo "$point$*" | tr -c 'a-z0-9\n' '-')"
    SG_TEST_KILL_AT=$point run --out "$out" "$@" >/dev/null 2>"$work/err"
    status=$?
    [ $status -eq 137 ] && [ -f "$out.tmp/.slicegpt-stream-partial" ] && [ ! -e "$out" ]
    check $? "killed at $point$*: OUT.tmp left behind (status $status)"
    run --out "$out" --resume "$@" >"$work/log" 2>"$work/err"
    status=$?
    [ $status -eq 0 ] && [ ! -e "$out.tmp" ]
    check $? "... resumed (status $status): $(grep resumed "$work/log")$(cat "$work/err")"
    same_model "$work/ref" "$out"
    check $? "... every file byte-identical to the uninterrupted run's"
}

killed_and_resumed embeddings
killed_and_resumed block:0
killed_and_resumed mid:2
killed_and_resumed block:4
killed_and_resumed head
killed_and_resumed write
# the next block's inputs spilled (no memory for the store) on both sides
killed_and_resumed block:1 --host-mem 1

# SIGTERM and SIGINT go through the handlers that remove the spill directory:
# what resume needs is in OUT.tmp, not there
for sig in TERM INT; do
    out="$work/sig$sig"
    mkdir "$work/spill$sig"
    SG_TEST_KILL_SIGNAL=$sig SG_TEST_KILL_AT=mid:1 run --out "$out" --host-mem 1 \
        --spill-dir "$work/spill$sig" >/dev/null 2>&1
    status=$?
    run --out "$out" --resume --host-mem 1 --spill-dir "$work/spill$sig" >"$work/log" 2>&1 &&
        [ $status -gt 128 ] && grep -q "at block 2 of 5" "$work/log" &&
        same_model "$work/ref" "$out" && [ -z "$(ls -A "$work/spill$sig")" ]
    check $? "SIG$sig mid-block (status $status), resumed: byte-identical, no scratch left"
done

# killed twice: the second run resumes the first, the third the second
out="$work/twice"
SG_TEST_KILL_AT=block:0 run --out "$out" >/dev/null 2>&1
SG_TEST_KILL_AT=mid:3 run --out "$out" --resume >/dev/null 2>&1
status=$?
run --out "$out" --resume >"$work/log" 2>&1 && grep -q "at block 4 of 5" "$work/log" &&
    [ $status -eq 137 ] && same_model "$work/ref" "$out"
check $? "killed twice, resumed twice: byte-identical"

# a plain rerun with the same options continues too
out="$work/plain"
SG_TEST_KILL_AT=block:2 run --out "$out" >/dev/null 2>&1
run --out "$out" >"$work/log" 2>&1 && grep -q "resumed a killed run of this job at block 4" \
    "$work/log" && same_model "$work/ref" "$out"
check $? "a plain rerun with the same options resumes: byte-identical"

# ---- another job: refused, files kept ----

out="$work/other"
SG_TEST_KILL_AT=block:1 run --out "$out" >/dev/null 2>&1
ls -A "$out.tmp" >"$work/before"
"$sgs" run --device cpu --model "$m" --calib "$text" --nsamples 24 --seqlen 64 \
    --chunk-tokens 256 --sparsity 0.5 --quiet --out "$out" --resume >/dev/null 2>"$work/err"
status=$?
ls -A "$out.tmp" >"$work/after"
[ $status -ne 0 ] && one_line "$work/err" "another job" && cmp -s "$work/before" "$work/after" &&
    [ ! -e "$out" ]
check $? "a resume with another sparsity is refused, files kept: $(cat "$work/err")"

run --out "$out" --resume --seed 7 >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "another job"
check $? "... and with another seed"

run --out "$out" --resume --dtype bf16 >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "another job"
check $? "... and with another output dtype"

touch -d "2001-01-01" "$m/config.json"
run --out "$out" --resume >/dev/null 2>"$work/err"
[ $? -ne 0 ] && one_line "$work/err" "another job"
check $? "a resume after a model file changed is refused: $(cat "$work/err")"

# a plain rerun of another job clears the killed run's OUT.tmp and starts again
"$sgs" run --device cpu --model "$m" --calib "$text" --nsamples 24 --seqlen 64 \
    --chunk-tokens 256 --sparsity 0.5 --quiet --out "$out" >"$work/log" 2>"$work/err"
[ $? -eq 0 ] && ! grep -q resumed "$work/log" && [ -f "$out/config.json" ] && [ ! -e "$out.tmp" ]
check $? "a plain rerun of another job starts again: $(cat "$work/err")"

# --resume with nothing to resume: an ordinary run
run --out "$work/fresh" --resume >"$work/log" 2>"$work/err"
[ $? -eq 0 ] && ! grep -q resumed "$work/log"
check $? "--resume with nothing to resume runs from the start"

tap_done
