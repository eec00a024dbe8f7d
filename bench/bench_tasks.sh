#!/bin/sh
# Speed of `tasks` against `ppl` on the same model and backend: requests/s
# and tokens/s (positions run through the blocks per second) of the five
# zero-shot tasks with each document's shared prefix run once (the
# default on the CPU) and with each choice its own sequence
# (--no-prefix-sharing), alternated ROUNDS times (min and median); and
# ppl's tokens/s on windows of the tasks' mean request length and of 512
# tokens. The load average is printed beside the figures: on a shared
# machine they move with it.
#
#   bench/bench_tasks.sh [MODEL] [LIMIT] [TASKS] [ROUNDS]
#       (default: the default model, 20 documents per task, all five, 2)
#
# Run from the build directory after tools/fetch-tasks.sh. Not a test.
set -eu
model=${1:-$(tools/fetch-default-model.sh)}
limit=${2:-20}
tasks=${3:-piqa,winogrande,hellaswag,arc_easy,arc_challenge}
rounds=${4:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
licenses=/usr/share/common-licenses
cat "$licenses/GFDL-1.3" "$licenses/MPL-2.0" "$licenses/Artistic" >"$work/text.txt"
sgs=./slicegpt-stream

echo "model $model, $limit documents of each of $tasks, $rounds rounds"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
i=0
while [ "$i" -lt "$rounds" ]; do
    i=$((i + 1))
    $sgs tasks --model "$model" --tasks "$tasks" --limit "$limit" --quiet \
        --json "$work/shared$i.json" >/dev/null
    $sgs tasks --model "$model" --tasks "$tasks" --limit "$limit" --quiet --no-prefix-sharing \
        --json "$work/unshared$i.json" >/dev/null
done
echo "load average after tasks: $(cut -d' ' -f1-3 /proc/loadavg)"
seqlen=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["speed"]; print(max(2, round(s["positions"] / s["requests"]) + 1))' "$work/unshared1.json")
pos=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["speed"]["positions"])' "$work/unshared1.json")
# ppl on about as many tokens, windows of the mean request length, then of 512
$sgs ppl --model "$model" --text "$work/text.txt" --seqlen "$seqlen" \
    --max-windows $((pos / (seqlen - 1) + 1)) --quiet --report "$work/p1.json" >/dev/null
$sgs ppl --model "$model" --text "$work/text.txt" --seqlen 512 --max-windows $((pos / 511 + 1)) \
    --quiet --report "$work/p2.json" >/dev/null
echo "load average after ppl: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work" "$rounds" "$seqlen" <<'PY'
import json, statistics, sys
work, rounds, seqlen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def runs(kind):
    return [json.load(open(f"{work}/{kind}{i}.json"))["speed"] for i in range(1, rounds + 1)]
def mm(xs):
    return f"{min(xs):8.1f} {statistics.median(xs):8.1f}"
print(f"{'':36s} {'requests/s min/median':>21s} {'tokens/s min/median':>19s}  positions")
rates = {}
for kind, label in (("shared", "tasks, shared prefixes run once"),
                    ("unshared", "tasks, each choice its own sequence")):
    r = runs(kind)
    rq = [s["requests"] / s["seconds"] for s in r]
    tk = [s["positions"] / s["seconds"] for s in r]
    rates[kind] = statistics.median(rq)
    print(f"{label:36s} {mm(rq)}    {mm(tk)}  {r[0]['positions']}")
for f, label in (("p1", f"ppl, windows of {seqlen}"), ("p2", "ppl, windows of 512")):
    p = json.load(open(f"{work}/{f}.json"))["perplexity"]
    print(f"{label:36s} {'':21s}    {p['tokens_per_s']:17.0f}  {p['tokens']}")
s = runs("shared")[0]
print(f"prefix sharing runs {s['positions']} of {s['positions_unshared']} positions "
      f"({100 * (1 - s['positions'] / s['positions_unshared']):.1f}% fewer): "
      f"{rates['shared'] / rates['unshared']:.2f}x the requests/s (medians)")
print(f"head rows: {s['continuation_tokens']} of {s['positions']} positions predict a "
      f"continuation token; ppl runs the head on every position")
PY
