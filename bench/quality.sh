#!/bin/sh
# Quality at equal stored size (issue 13; never part of make check): for
# the default model (SmolLM2-135M), tinyopt-250K and stories260K, at
# stored sizes 90%, 80% and 70% of dense (--target-size), each width
# method: its widths, stored parameters and held-out perplexity, one
# table (Markdown) and one plot of perplexity against stored size, one
# line per method (gnuplot, PNG). Zero-shot accuracy (the default model
# only: the tiny ones were trained on TinyStories) is a column when the
# task files are in the cache (tools/fetch-tasks.sh): the mean acc over
# the first SG_QUALITY_TASKS_LIMIT documents of each task (default 200).
#
#   bench/quality.sh [MODELS] [SIZES] [METHODS]
#     defaults: "smollm2 tinyopt stories" "0.9 0.8 0.7" "reference nystrom spectrum fill shared"
#   a method is a --method value, or "shared": --method reference --shared-basis,
#   or "reference-r1": --method reference --round-interval 1 (the reference
#   filling its budget to the parameter, the control for fill)
#   SG_QUALITY_OUT: where results go (default out/quality); a cell whose
#   report is there already is not run again (delete it to redo it).
#   SG_QUALITY_TABLE_ONLY=1: run nothing, make the table and plot of the
#   cells there are.
#
# Calibration and held-out text:
#   smollm2: examples/default-run.sh's job: the license texts GPL-3, GPL-2,
#     LGPL-2.1, Apache-2.0 calibrate (32 x 512); GFDL-1.3, MPL-2.0 and
#     Artistic, never seen, are scored in windows of 512.
#   tinyopt, stories: the TinyStories excerpt ($SG_DATA), its first 60% of
#     lines calibrate (64 x 256), the remaining 40% are scored in windows
#     of 256 (tinyopt's context is 256).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
sgs="$here/slicegpt-stream"
data=${SG_DATA:-$here/../shared/data}
models=${1:-smollm2 tinyopt stories}
sizes=${2:-0.9 0.8 0.7}
methods=${3:-reference nystrom spectrum fill shared}
out=${SG_QUALITY_OUT:-$here/out/quality}
mkdir -p "$out/texts"
lic=/usr/share/common-licenses
ts="$data/tinystories-valid-subset/tinystories_valid_first.txt"
n=$(wc -l <"$ts")
# made once: another run of this script may be reading them
if [ ! -f "$out/texts/done" ]; then
    head -n $((n * 6 / 10)) "$ts" >"$out/texts/ts-calib.txt"
    tail -n +$((n * 6 / 10 + 1)) "$ts" >"$out/texts/ts-eval.txt"
    cat "$lic/GPL-3" "$lic/GPL-2" "$lic/LGPL-2.1" "$lic/Apache-2.0" >"$out/texts/lic-calib.txt"
    cat "$lic/GFDL-1.3" "$lic/MPL-2.0" "$lic/Artistic" >"$out/texts/lic-eval.txt"
    touch "$out/texts/done"
fi
has_tasks=0
[ -f "${SG_CACHE:-$HOME/.cache/slicegpt-stream}/tasks/piqa/requests.jsonl.gz" ] && has_tasks=1

# setup NAME: $model, $calib_opts, $eval, $seqlen for one model
setup() {
    case $1 in
    smollm2)
        model=$("$here/tools/fetch-default-model.sh")
        calib_opts="--calib $out/texts/lic-calib.txt --nsamples 32 --seqlen 512"
        eval="$out/texts/lic-eval.txt" seqlen=512 ;;
    tinyopt)
        model="$data/tinyopt-250K"
        calib_opts="--tokenizer $data/stories260K/tok512.bin --calib $out/texts/ts-calib.txt --nsamples 64 --seqlen 256"
        eval="$out/texts/ts-eval.txt" seqlen=256 ;;
    stories)
        model="$out/stories260K-hf"
        [ -d "$model" ] || "$here/tools/sg-llama2c-to-hf" "$data/stories260K/stories260K.bin" \
            "$model" --tokenizer "$data/stories260K/tok512.bin" >/dev/null
        calib_opts="--calib $out/texts/ts-calib.txt --nsamples 64 --seqlen 256"
        eval="$out/texts/ts-eval.txt" seqlen=256 ;;
    *) echo "quality.sh: unknown model $1" >&2; exit 2 ;;
    esac
}

# ppl MODEL_DIR REPORT: held-out perplexity of a model, as JSON
ppl() {
    tok=
    case $m in tinyopt | stories) tok="--tokenizer $data/stories260K/tok512.bin" ;; esac
    "$sgs" ppl --quiet --model "$1" $tok --text "$eval" --seqlen $seqlen --report "$2" >/dev/null
}

# tasks MODEL REPORT: mean zero-shot accuracy of a model, as JSON
tasks() {
    "$sgs" tasks --quiet --model "$1" --limit "${SG_QUALITY_TASKS_LIMIT:-200}" \
        --tasks piqa,winogrande,hellaswag,arc_easy,arc_challenge \
        --report "$2" >"${2%.json}.log" || rm -f "$2"
}

for m in $models; do
    setup $m
    [ -f "$out/$m-dense.json" ] || [ -n "${SG_QUALITY_TABLE_ONLY:-}" ] ||
        ppl "$model" "$out/$m-dense.json"
    [ $has_tasks = 1 ] && [ $m = smollm2 ] && [ ! -f "$out/$m-dense.tasks.json" ] &&
        [ -z "${SG_QUALITY_TABLE_ONLY:-}" ] && tasks "$model" "$out/$m-dense.tasks.json"
    for s in $sizes; do
        for me in $methods; do
            cell="$out/$m-$me-$s"
            [ -f "$cell.ppl.json" ] || [ -n "${SG_QUALITY_TABLE_ONLY:-}" ] && continue
            rm -rf "$cell.model"
            echo "quality.sh: $m, --method $me, --target-size $s" >&2
            how="--method $me"
            [ $me = shared ] && how="--method reference --shared-basis"
            [ $me = reference-r1 ] && how="--method reference --round-interval 1"
            "$sgs" run --quiet --model "$model" $calib_opts $how --target-size $s \
                --out "$cell.model" --report "$cell.run.json" >"$cell.log"
            ppl "$cell.model" "$cell.ppl.json"
            [ $has_tasks = 1 ] && [ $m = smollm2 ] && tasks "$cell.model" "$cell.tasks.json"
            rm -rf "$cell.model"
        done
    done
done

# the table, and one data file per model and method for the plot
table="$out/quality.md"
{
    echo "| model | method | target | widths | stored parameters | % of dense | perplexity | vs dense |$([ $has_tasks = 1 ] && echo ' zero-shot |')"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |$([ $has_tasks = 1 ] && echo ' --- |')"
    for m in $models; do
        dense=$(jq '.perplexity.perplexity' "$out/$m-dense.json")
        dparams=$(jq '.parameters.dense' "$out/$m-$(echo $methods | cut -d' ' -f1)-$(echo $sizes | cut -d' ' -f1).run.json")
        dacc=
        [ $has_tasks = 1 ] && dacc=" $(jq -r '(.tasks_average.acc // empty) * 100 | . * 10 | round / 10' "$out/$m-dense.tasks.json" 2>/dev/null || echo n/a) |"
        printf '| %s | dense | 1 | D = %s | %s | 100.0%% | %.4f | |%s\n' $m \
            "$(jq '.model.dim // .widths.D' "$out/$m-$(echo $methods | cut -d' ' -f1)-$(echo $sizes | cut -d' ' -f1).run.json")" \
            "$dparams" "$dense" "$dacc"
        for me in $methods; do
            : >"$out/$m-$me.dat"
            for s in $sizes; do
                c="$out/$m-$me-$s"
                [ -f "$c.ppl.json" ] || continue
                stored=$(jq '.parameters.stored' "$c.run.json")
                pct=$(jq '.parameters.stored_percent' "$c.run.json")
                p=$(jq '.perplexity.perplexity' "$c.ppl.json")
                if [ $me = reference ] || [ $me = shared ] || [ $me = reference-r1 ]; then
                    w="d = $(jq '.widths.d' "$c.run.json")"
                elif [ $me = nystrom ]; then
                    w="D = $(jq '.widths.D' "$c.run.json"), F' = $(jq '.widths.d_ffn[0]' "$c.run.json")"
                else
                    w="mid $(jq -r '[.widths.d_mid[]] | "\(min)-\(max)"' "$c.run.json"), out $(jq -r '[.widths.d_out[]] | "\(min)-\(max)"' "$c.run.json"), emb $(jq '.widths.embeddings' "$c.run.json")"
                fi
                acc=
                [ $has_tasks = 1 ] && acc=" $(jq -r '(.tasks_average.acc // empty) * 100 | . * 10 | round / 10' "$c.tasks.json" 2>/dev/null || echo n/a) |"
                printf '| %s | %s | %s | %s | %s | %.1f%% | %.4f | %+.1f%% |%s\n' $m $me $s "$w" \
                    "$stored" "$pct" "$p" "$(echo "100 * ($p / $dense - 1)" | bc -l)" "$acc"
                echo "$pct $p" >>"$out/$m-$me.dat"
            done
            sort -n -o "$out/$m-$me.dat" "$out/$m-$me.dat"
        done
    done
} >"$table"
cat "$table"

if command -v gnuplot >/dev/null; then
    nm=$(echo $models | wc -w)
    {
        echo "set terminal pngcairo size $((520 * nm)),420 noenhanced"
        echo "set output '$out/quality.png'"
        echo "set multiplot layout 1,$nm title 'held-out perplexity at equal stored size (slicegpt-stream, bench/quality.sh)'"
        echo "set logscale y; set grid; set key top right"
        echo "set xlabel 'stored parameters, % of dense'; set ylabel 'perplexity'"
        for m in $models; do
            echo "set title '$m (dense $(jq '.perplexity.perplexity' "$out/$m-dense.json" | xargs printf '%.2f'))'"
            printf 'plot'
            sep=
            for me in $methods; do
                printf "%s '%s' using 1:2 with linespoints lw 2 title '%s'" "$sep" "$out/$m-$me.dat" "$me"
                sep=,
            done
            echo
        done
        echo "unset multiplot"
    } >"$out/quality.gp"
    gnuplot "$out/quality.gp" && echo "plot: $out/quality.png"
fi
