# Sourced by bench_peers.sh and bench_slice_peers.sh (after `set -eu` and
# `here=`): what both need before they time anything.
#   cache, venv   the cache folder and the peers' scratch venv
#                 ($SG_PEERS_VENV, default in the cache)
#   model, f32    the default model and its float32 GGUF, written once by
#                 tools/sg-gguf-f32, so every engine reads the same weights
#   work          a scratch folder removed on exit
# and peers_have NAME IMPORTS PACKAGES: true when IMPORTS (a comma list of
# Python modules) import in the venv, after one `pip install PACKAGES` if
# they did not; otherwise says on stderr that NAME is left out.
cache=${SG_CACHE:-$HOME/.cache/slicegpt-stream}
venv=${SG_PEERS_VENV:-$cache/peers-venv}
model=$("$here/tools/fetch-default-model.sh")
f32=$cache/$(basename "$model" .gguf).F32.gguf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x "$here/tools/sg-gguf-f32" ] || (cd "$here" && make -s tools/sg-gguf-f32)
[ -f "$f32" ] || "$here/tools/sg-gguf-f32" "$model" "$f32"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip || true
fi

peers_have()
{
    "$venv/bin/python" -c "import $2" 2>/dev/null && return 0
    # shellcheck disable=SC2086 # a list of packages
    "$venv/bin/pip" install -q $3 && "$venv/bin/python" -c "import $2" 2>/dev/null && return 0
    echo "$(basename "$0"): could not install $3: $1 left out" >&2
    return 1
}
