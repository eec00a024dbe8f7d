#!/bin/sh
# slicegpt-stream tasks and run --tasks, end to end on stories260K:
#  - a model sliced at sparsity 0 scores the same accuracy as the dense one
#    on the same requests (run --tasks prints a change of +0.00 everywhere,
#    and tasks on each model prints the same rows);
#  - a request file of our own format, plain and gzip-compressed, gives the
#    same table;
#  - bad input: a malformed line names the file and the line, an unknown
#    task lists the known ones, a missing field, a gold out of range: one
#    line and a non-zero exit (run --tasks too, before anything is
#    written); an empty continuation and a request longer
#    than the context are skipped and counted, never silently;
#  - the default model (SmolLM2-135M) on two documents of each task.
. "$(dirname "$0")/tap.sh"
tap_workdir sgtasks
calib="$text"
cache=${SG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slicegpt-stream}
all=piqa,winogrande,hellaswag,arc_easy,arc_challenge

"$build/tools/sg-llama2c-to-hf" "$stories" "$work/stories" --tokenizer "$tok" >/dev/null
check $? "stories260K converted"

# our own format, written by hand: doc, context, continuation, gold
cat >"$work/own.jsonl" <<'J'
{"doc": 0, "context": "Lily went to the park.", "continuation": " She played on the swing.", "gold": 0}
{"doc": 0, "context": "Lily went to the park.", "continuation": " The swing ate a truck.", "gold": 0}
{"doc": "b", "context": "Tom had a red ball. He", "continuation": " threw it to his dog.", "gold": 1}
{"doc": "b", "context": "Tom had a red ball. He", "continuation": " was very happy.", "gold": 1}
{"doc": "b", "context": "Tom had a red ball. He", "continuation": " sky blue green.", "gold": 1}
J
gzip -c "$work/own.jsonl" >"$work/own-gz.jsonl.gz"
"$sgs" tasks --model "$work/stories" --tasks "$work/own.jsonl" --quiet >"$work/own.out" 2>"$work/own.err" &&
    "$sgs" tasks --model "$work/stories" --tasks "$work/own-gz.jsonl.gz" --quiet \
        >"$work/own-gz.out" 2>"$work/own-gz.err"
check $? "tasks reads a request file of our own format, plain and gzipped"
rows() { sed -n '/^task /,/^average/p' "$1" | awk 'NR > 1 { $1 = ""; print }'; }
[ "$(rows "$work/own.out")" = "$(rows "$work/own-gz.out")" ] &&
    grep -q '^own\.jsonl *2 ' "$work/own.out"
check $? "the same table from the plain and the gzipped file (2 documents)"
diag "$work/own.out"

if [ -f "$cache/tasks/piqa/requests.jsonl.gz" ]; then
    "$sgs" run --model "$work/stories" --calib "$calib" --nsamples 8 --seqlen 128 --sparsity 0 \
        --out "$work/s0" --tasks $all --tasks-limit 10 --quiet --device cpu >"$work/run.out" 2>&1
    check $? "run --sparsity 0 --tasks (five tasks, 10 documents each)"
    sed -n '/^task /,/^average/p' "$work/run.out" >"$work/pair"
    [ "$(grep -c . "$work/pair")" -eq 7 ] &&
        sed 1d "$work/pair" | awk '{ n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[+-][0-9]/) {
                                          n++; if ($i != "+0.00") bad = 1 } if (n != 2) bad = 1 }
                                   END { exit bad }'
    check $? "dense and sliced at sparsity 0 score the same: every change +0.00"
    diag "$work/pair"
    "$sgs" tasks --model "$work/stories" --tasks $all --limit 10 --quiet --json "$work/d.json" \
        >"$work/dense.out" 2>/dev/null &&
        "$sgs" tasks --model "$work/s0" --tasks $all --limit 10 --quiet --json "$work/s.json" \
            >"$work/sliced.out" 2>/dev/null
    check $? "tasks on the dense and on the sliced model"
    [ "$(sed -n '/^task /,/^average/p' "$work/dense.out")" = \
        "$(sed -n '/^task /,/^average/p' "$work/sliced.out")" ]
    check $? "tasks prints the same rows for both"
    python3 - "$work/d.json" "$work/pair" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rows = [l.split() for l in open(sys.argv[2])][1:-1]
for t, row in zip(r["tasks"], rows):
    assert row[0] == t["name"] and int(row[1]) == t["documents"] == 10, (row, t)
    assert float(row[2]) == round(100 * t["acc"], 2), (row, t)
    assert abs(float(row[4]) - 100 * t["acc_stderr"]) < 0.006, (row, t)
assert r["speed"]["requests"] > 0 and r["command"] == "tasks"
PY
    check $? "the JSON record holds the rows run printed (documents, acc, stderr)"
else
    skip "run --sparsity 0 --tasks" "no task data in $cache/tasks (tools/fetch-tasks.sh)"
fi

# bad input: one line, non-zero exit
bad() { # name file expected-pattern
    "$sgs" tasks --model "$work/stories" --tasks "$2" --quiet --device cpu >/dev/null 2>"$work/$1.err"
    rc=$?
    [ $rc -ne 0 ] && one_line "$work/$1.err" "$3"
    check $? "$1: exit $rc, one line: $(cat "$work/$1.err")"
}
head -2 "$work/own.jsonl" >"$work/malformed.jsonl"
echo '{"doc": 1, "context": "x", "continuation": ' >>"$work/malformed.jsonl"
bad malformed "$work/malformed.jsonl" "malformed.jsonl:3: not valid JSON"
printf '{"doc": 1, "context": "x", "gold": 0}\n' >"$work/nocont.jsonl"
bad "missing continuation" "$work/nocont.jsonl" "nocont.jsonl:1: no \"continuation\" string"
printf '[1, 2]\n' >"$work/array.jsonl"
bad "not an object" "$work/array.jsonl" "array.jsonl:1: not a JSON object"
sed 's/"gold": 1/"gold": 3/' "$work/own.jsonl" >"$work/gold.jsonl"
bad "gold out of range" "$work/gold.jsonl" "gold.jsonl:3: gold choice 3, but the document has 3 choices"
bad "unknown task" "piqa,lambada,arc_easy" "unknown task 'lambada' (known: piqa, winogrande, hellaswag, arc_easy, arc_challenge"
head -c 100 "$work/own-gz.jsonl.gz" >"$work/cut.jsonl.gz"
bad "truncated gzip" "$work/cut.jsonl.gz" "cut.jsonl.gz:1: truncated gzip data"
SG_CACHE="$work/nocache" "$sgs" tasks --model "$work/stories" --tasks piqa --quiet --device cpu \
    >/dev/null 2>"$work/nocache.err"
[ $? -ne 0 ] && one_line "$work/nocache.err" "piqa: no task data at $work/nocache/tasks/piqa/requests.jsonl.gz.*tools/fetch-tasks.sh"
check $? "an empty cache: one line naming the file and tools/fetch-tasks.sh"

"$sgs" run --model "$work/stories" --calib "$calib" --nsamples 8 --seqlen 128 --out "$work/never" \
    --tasks "$work/malformed.jsonl" --quiet --device cpu >/dev/null 2>"$work/runbad.err"
[ $? -ne 0 ] && one_line "$work/runbad.err" "malformed.jsonl:3: not valid JSON" &&
    [ ! -e "$work/never" ] && [ ! -e "$work/never.tmp" ]
check $? "run --tasks with a malformed file stops before slicing: one line, nothing written"

# skipped and counted: an empty continuation, a request past the context
long=$(python3 -c 'print(" ".join(["the little dog ran"] * 200))')
{
    cat "$work/own.jsonl"
    echo '{"doc": 7, "context": "Sam saw a cat.", "continuation": "", "gold": 0}'
    echo '{"doc": 7, "context": "Sam saw a cat.", "continuation": " It ran.", "gold": 0}'
    echo "{\"doc\": 8, \"context\": \"$long\", \"continuation\": \" The end.\", \"gold\": 0}"
    echo "{\"doc\": 8, \"context\": \"$long\", \"continuation\": \" The dog.\", \"gold\": 0}"
} >"$work/skips.jsonl"
"$sgs" tasks --model "$work/stories" --tasks "$work/skips.jsonl" --quiet --device cpu >"$work/skips.out" \
    2>"$work/skips.err"
rc=$?
[ $rc -eq 0 ] && one_line "$work/skips.err" \
    "skips.jsonl: 3 requests skipped (1 with an empty continuation, the first at line 6; 2 longer than the model's context (512 positions), the first at line 8); 2 of 4 documents left out" &&
    grep -q '^skips\.jsonl *2 ' "$work/skips.out" && [ "$(rows "$work/skips.out")" != "" ]
check $? "an empty continuation and a too-long request: skipped, counted on one line, the other 2 documents scored"
diag "$work/skips.err"
{
    echo '{"doc": 7, "context": "Sam saw a cat.", "continuation": "", "gold": 0}'
    echo '{"doc": 7, "context": "Sam saw a cat.", "continuation": " It ran.", "gold": 0}'
} >"$work/allskip.jsonl"
"$sgs" tasks --model "$work/stories" --tasks "$work/allskip.jsonl" --quiet >/dev/null \
    2>"$work/allskip.err"
[ $? -ne 0 ] && tail -1 "$work/allskip.err" | grep -q "every document has a request that cannot be scored"
check $? "nothing left to score: an error, not an empty table"

# the default model, two documents of each task
model=${SG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slicegpt-stream}/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$model" ] && [ -f "$cache/tasks/piqa/requests.jsonl.gz" ]; then
    "$sgs" tasks --model "$model" --tasks $all --limit 2 --quiet >"$work/smol.out" 2>/dev/null &&
        [ "$(sed -n '/^task /,/^average/p' "$work/smol.out" | grep -c ' 2  ')" -eq 5 ]
    check $? "the default model scores two documents of each of the five tasks"
    diag "$work/smol.out"
else
    skip "the default model on the five tasks" "model or task data not in the cache"
fi
tap_done
