#!/bin/sh
# slicegpt-stream report on a small sliced model: with gnuplot, a summary
# and non-empty PNG (and SVG) plots; given run reports, the perplexity
# plot too; without gnuplot in PATH, exit status 1 and one line on stderr,
# nothing on stdout.
#
# The model: stories260K sliced at 0.25 and 0.5 on a TinyStories excerpt.
# Needs the shared data ($SG_DATA); skipped without it. The plots are
# skipped where gnuplot is not installed. Prints TAP.

. "$(dirname "$0")/tap.sh"
tap_workdir sgreport

"$build/tools/sg-llama2c-to-hf" "$stories" "$work/model" --tokenizer "$tok" >/dev/null
check $? "stories260K converted"
for s in 0.25 0.5; do
    "$sgs" run --device cpu --method reference --quiet --model "$work/model" --calib "$text" --nsamples 24 \
        --seqlen 64 --sparsity $s --eval "$text" --eval-windows 10 --out "$work/s$s" \
        --report "$work/s$s.json" >/dev/null
    check $? "sliced at $s, with a report"
done

# no gnuplot: PATH without it (the program is called by its path)
PATH=/nonexistent "$sgs" report "$work/s0.25" >"$work/none.out" 2>"$work/none.err"
status=$?
[ $status -eq 1 ]
check $? "without gnuplot: exit status 1 (got $status)"
[ "$(wc -l <"$work/none.err")" -eq 1 ] && grep -q 'gnuplot' "$work/none.err" &&
    [ ! -s "$work/none.out" ]
check $? "without gnuplot: one line on stderr naming it, nothing on stdout"
sed 's/^/# /' "$work/none.err"

if ! command -v gnuplot >/dev/null 2>&1; then
    skip "report writes the plots" "gnuplot not installed"
    tap_done
fi
"$sgs" report "$work/s0.25" --out "$work/p" "$work/s0.25.json" "$work/s0.5.json" \
    >"$work/report.out" 2>"$work/report.err"
check $? "report exits 0"
[ -s "$work/report.err" ] && sed 's/^/# /' "$work/report.err"
grep -q 'variance kept at the chosen width' "$work/report.out" &&
    grep -q '^  block_output *mean [0-9.]*%, lowest [0-9.]*% (layer [0-9]*)' "$work/report.out"
check $? "the summary: variance kept per signal"
for p in spectrum variance widths ppl-size; do
    [ -s "$work/p-$p.png" ] && [ "$(head -c 4 "$work/p-$p.png" | od -An -c | tr -d ' ')" = "211PNG" ]
    check $? "$p: a non-empty PNG"
done
"$sgs" report "$work/s0.5" --format svg >/dev/null 2>&1
check $? "report --format svg exits 0"
[ -s "$work/s0.5/report-spectrum.svg" ] && grep -q '<svg' "$work/s0.5/report-spectrum.svg"
check $? "svg: DIR/report-spectrum.svg by default"
"$sgs" report "$work/s0.25" --out "$work/no/such/dir/p" >"$work/nodir.out" 2>"$work/nodir.err"
[ $? -eq 1 ] && [ "$(wc -l <"$work/nodir.err")" -eq 1 ] && grep -q 'cannot write' "$work/nodir.err" &&
    ! grep -q PNG "$work/nodir.out"
check $? "an unwritable PREFIX: one line, and no image on stdout"
"$sgs" report "$work/model" >/dev/null 2>"$work/dense.err"
[ $? -eq 1 ] && grep -q 'not a sliced model' "$work/dense.err"
check $? "a dense model: refused with one line"
tap_done
