#!/bin/sh
# Progress on a stderr that is not a terminal stays short: at most one line
# every SG_PROGRESS_INTERVAL seconds, plus one as each phase ends, no
# carriage returns; --quiet leaves stderr empty. On a terminal (when
# script(1) can fake one) the line is redrawn in place.
#
# The filters capture and slice report the same way.
#
# The run: stories260K sliced and scored on 20 windows, three phases
# (slice, perplexity dense, perplexity sliced) over 5 blocks. Needs the
# shared data ($SG_DATA); skipped without it. Prints TAP.

. "$(dirname "$0")/tap.sh"
tap_workdir sgprogress

"$build/tools/sg-llama2c-to-hf" "$stories" "$work/model" --tokenizer "$tok" >/dev/null
check $? "stories260K converted"

# slice_run NAME [options]: the run, its stderr in NAME.err, wall seconds in NAME.sec
slice_run() {
    name=$1
    shift
    rm -rf "$work/out"
    t0=$(date +%s.%N)
    "$sgs" run --device cpu --model "$work/model" --calib "$text" --nsamples 24 --seqlen 64 \
        --eval "$text" --eval-windows 20 --out "$work/out" "$@" \
        >"$work/$name.out" 2>"$work/$name.err"
    status=$?
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{ printf "%.3f\n", $2 - $1 }' >"$work/$name.sec"
    return $status
}
lines() { wc -l <"$1" | tr -d ' '; }

# every update written: one line per stage of each block at least (7 per
# sequential block: load, capture, eigensolve, capture, eigensolve,
# rotate/slice, write), so the throttle below has something to hold back
SG_PROGRESS_INTERVAL=0 slice_run all
check $? "run with every update written"
all=$(lines "$work/all.err")
[ "$all" -ge 35 ]
check $? "unthrottled: $all lines (at least 7 for each of 5 blocks)"
grep -q 'slice: block 3/5 capture, [0-9-]* tokens/s, elapsed [0-9:]*, ETA [0-9:-]*$' "$work/all.err"
check $? "a line says the phase, block i/N, the stage, tokens/s, elapsed and ETA"
grep -q 'perplexity, sliced: block 2/5' "$work/all.err"
check $? "the evaluations report progress too"

# a long interval: only the three phase ends
SG_PROGRESS_INTERVAL=1000 slice_run long
check $? "run with a 1000 s interval"
long=$(lines "$work/long.err")
[ "$long" -eq 3 ]
check $? "1000 s interval: $long lines, one per phase (3)"

# the default interval (5 s): at most t/5 + 3 lines for a run of t seconds
unset SG_PROGRESS_INTERVAL
slice_run default
check $? "run with the default interval"
got=$(lines "$work/default.err")
bound=$(awk -v t="$(cat "$work/default.sec")" 'BEGIN { printf "%d\n", t / 5 + 3 }')
[ "$got" -le "$bound" ]
check $? "default interval: $got lines in $(cat "$work/default.sec") s, at most $bound"

cat "$work/all.err" "$work/long.err" "$work/default.err" | grep -q "$(printf '\r')"
check $((! $?)) "no carriage return off a terminal"

slice_run quiet --quiet
check $? "run --quiet"
[ ! -s "$work/quiet.err" ]
check $? "--quiet: stderr empty"
grep -q '^perplexity on ' "$work/quiet.out"
check $? "--quiet: the summary is still on stdout"

# the filters: capture and slice report too, one line each as they end
# with a long interval
rm -rf "$work/piped"
{ SG_PROGRESS_INTERVAL=1000 "$sgs" load "$work/model" | "$sgs" fold |
    SG_PROGRESS_INTERVAL=1000 "$sgs" capture --calib "$text" --nsamples 24 --seqlen 64 |
    "$sgs" cov | "$sgs" eig | SG_PROGRESS_INTERVAL=1000 "$sgs" slice --sparsity 0.25 |
    "$sgs" write "$work/piped"; } 2>"$work/pipe.err"
check $? "the stage filters piped"
grep -q '^slicegpt-stream: capture: done in [0-9:]*, [0-9]* tokens/s$' "$work/pipe.err" &&
    grep -q '^slicegpt-stream: slice: done in [0-9:]*' "$work/pipe.err" &&
    [ "$(lines "$work/pipe.err")" -eq 2 ]
check $? "capture and slice: one line each as they end"
sed 's/^/# /' "$work/pipe.err"

# a terminal: script(1) gives the run one; the line is redrawn with \r
if command -v script >/dev/null 2>&1 &&
    script -qec "true" /dev/null >/dev/null 2>&1; then
    rm -rf "$work/out"
    script -qec "'$sgs' run --device cpu --model '$work/model' --calib '$text' --nsamples 64 \
        --seqlen 256 --out '$work/out' >/dev/null" /dev/null >"$work/tty.log" 2>&1
    grep -q "$(printf '\r')slicegpt-stream: slice: " "$work/tty.log"
    check $? "on a terminal the line is redrawn in place"
else
    n=$((n + 1))
    echo "ok $n - on a terminal the line is redrawn in place # SKIP no script(1)"
fi
tap_done
