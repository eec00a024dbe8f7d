#!/bin/sh
# Speed of `tasks` against `ppl` on the same model and backend: requests/s
# and tokens/s (positions run through the blocks per second) of the five
# zero-shot tasks, and ppl's tokens/s on windows of the tasks' mean
# request length and of 512 tokens; and what running each document's
# shared prefix once (a prefix tree) would save. The load average is
# printed beside the figures: on a shared machine they move with it.
#
#   bench/bench_tasks.sh [MODEL] [LIMIT] [TASKS]
#       (default: the default model, 20 documents per task, all five)
#
# Run from the build directory after tools/fetch-tasks.sh. Not a test.
set -eu
model=${1:-$(tools/fetch-default-model.sh)}
limit=${2:-20}
tasks=${3:-piqa,winogrande,hellaswag,arc_easy,arc_challenge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
licenses=/usr/share/common-licenses
cat "$licenses/GFDL-1.3" "$licenses/MPL-2.0" "$licenses/Artistic" >"$work/text.txt"
sgs=./slicegpt-stream

echo "model $model, $limit documents of each of $tasks"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
$sgs tasks --model "$model" --tasks "$tasks" --limit "$limit" --quiet --json "$work/t.json" \
    >"$work/t.out"
python3 - "$work/t.json" >"$work/t.txt" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["speed"]
mean = s["positions"] / s["requests"]
print(s["requests"], s["positions"], s["continuation_tokens"], s["seconds"], s["prefix_tree_positions"],
      max(2, round(mean) + 1))
PY
read -r req pos cont secs tree seqlen <"$work/t.txt"
echo "load average after tasks: $(cut -d' ' -f1-3 /proc/loadavg)"
# ppl on about as many tokens, windows of the mean request length, then of 512
windows=$((pos / (seqlen - 1) + 1))
$sgs ppl --model "$model" --text "$work/text.txt" --seqlen "$seqlen" --max-windows "$windows" \
    --quiet --report "$work/p1.json" >/dev/null
$sgs ppl --model "$model" --text "$work/text.txt" --seqlen 512 --max-windows $((pos / 511 + 1)) \
    --quiet --report "$work/p2.json" >/dev/null
echo "load average after ppl: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work/p1.json" "$work/p2.json" "$req" "$pos" "$cont" "$secs" "$tree" "$seqlen" <<'PY'
import json, sys
p1, p2 = (json.load(open(f))["perplexity"] for f in sys.argv[1:3])
req, pos, cont = map(int, sys.argv[3:6]); secs = float(sys.argv[6]); tree = int(sys.argv[7])
seqlen = int(sys.argv[8])
print(f"{'':34s} {'requests/s':>10s} {'tokens/s':>9s}  (positions, s)")
print(f"{'tasks (one sequence per choice)':34s} {req / secs:10.1f} {pos / secs:9.0f}  ({pos}, {secs:.2f})")
print(f"{'ppl, windows of %d' % seqlen:34s} {'':10s} {p1['tokens_per_s']:9.0f}  ({p1['tokens']}, {p1['seconds']:.2f})")
print(f"{'ppl, windows of 512':34s} {'':10s} {p2['tokens_per_s']:9.0f}  ({p2['tokens']}, {p2['seconds']:.2f})")
print(f"head rows: {cont} of {pos} positions ({100 * cont / pos:.1f}%) predict a continuation token; "
      f"ppl runs the head on every position")
print(f"prefix sharing: a prefix tree per document would run {tree} of {pos} positions "
      f"({100 * (pos - tree) / pos:.1f}% fewer); at the same tokens/s, "
      f"{req / secs * pos / tree:.1f} requests/s")
PY
