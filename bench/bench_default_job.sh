#!/bin/sh
# The default job (examples/default-run.sh) of this tree against the same
# job of an earlier commit, side by side on this machine (never part of
# make check).
#
#   bench/bench_default_job.sh [REV] [ROUNDS] [REV_CORETYPE]    (defaults c6e0858 2, unset)
#
# REV is built from this repository in a scratch clone. Each round runs,
# one after the other: REV's job, this tree's job with its default method
# (nystrom) and with --method reference (the computation REV's job ran).
# REV_CORETYPE, when given, is OPENBLAS_CORETYPE for REV's runs only:
# Prescott reproduces a machine whose OpenBLAS does not recognise the CPU,
# where REV ran OpenBLAS's SSE3 kernels and this tree re-executes itself
# onto the fast ones. Printed per run: wall, CPU use (user+sys over wall),
# the load average before it, the BLAS kernel that ran (OPENBLAS_VERBOSE=2)
# and the perplexities; then min and median wall per engine and the ratios.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:-c6e0858}
rounds=${2:-2}
coretype=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! git -C "$here" rev-parse -q --verify "$rev^{commit}" > /dev/null; then
    echo "bench_default_job: no commit $rev in $here" >&2
    exit 2
fi
git clone -q "$here" "$work/base"
git -C "$work/base" checkout -q "$rev"
if ! (cd "$work/base" && autoreconf -fi && ./configure && make -j"$(nproc)") \
    > "$work/build.log" 2>&1; then
    tail -20 "$work/build.log" >&2
    echo "bench_default_job: building $rev failed" >&2
    exit 1
fi
"$here/tools/fetch-default-model.sh" > /dev/null

echo "$(uname -m), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds;" \
    "base $rev$( [ -n "$coretype" ] && echo " with OPENBLAS_CORETYPE=$coretype")," \
    "this tree $(git -C "$here" rev-parse --short HEAD)"
: > "$work/results"

# one NAME ROUND COMMAND...: runs the job, prints its line, records its wall
one() {
    name=$1 round=$2
    shift 2
    load=$(cut -d' ' -f1 /proc/loadavg)
    if ! /usr/bin/time -f "%e %U %S" -o "$work/time" env OPENBLAS_VERBOSE=2 "$@" \
        > "$work/job.out" 2>&1; then
        tail -5 "$work/job.out" >&2
        echo "bench_default_job: $name failed" >&2
        exit 1
    fi
    read -r wall user sys < "$work/time"
    core=$(sed -n 's/^Core: //p' "$work/job.out" | tail -1)
    ppl=$(sed -n 's/^perplexity on .*windows of 512): \(.*\); eval.*/\1/p' "$work/job.out")
    cpu=$(awk -v w="$wall" -v u="$user" -v s="$sys" 'BEGIN { printf "%.0f", 100 * (u + s) / w }')
    echo "round $round $name: load $load, wall $wall s, cpu $cpu%, kernel $core; $ppl"
    echo "$name $wall" >> "$work/results"
}

r=1
while [ "$r" -le "$rounds" ]; do
    if [ -n "$coretype" ]; then
        one base "$r" OPENBLAS_CORETYPE="$coretype" "$work/base/examples/default-run.sh" 0.25 \
            "$work/out-base"
    else
        one base "$r" "$work/base/examples/default-run.sh" 0.25 "$work/out-base"
    fi
    one nystrom "$r" "$here/examples/default-run.sh" 0.25 "$work/out-new" nystrom
    one reference "$r" "$here/examples/default-run.sh" 0.25 "$work/out-new" reference
    r=$((r + 1))
done

# min and median wall of each engine, then base over each of ours
for e in base nystrom reference; do
    awk -v e="$e" '$1 == e { print $2 }' "$work/results" | sort -n |
        awk -v e="$e" '{ v[NR] = $1 } END {
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%s %.2f %.2f\n", e, v[1], m }'
done > "$work/summary"
awk '{ printf "%-9s wall: min %.2f s, median %.2f s\n", $1, $2, $3; min[$1] = $2; med[$1] = $3 }
     END { for (e in min) if (e != "base")
               printf "base / %s: %.2fx (min), %.2fx (median)\n", e, min["base"] / min[e], med["base"] / med[e] }' \
    "$work/summary"
