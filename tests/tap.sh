# What the shell tests share (sourced): the paths to the program and the
# shared data, a skip of the whole test when the data is absent, a private
# work directory removed on exit, and TAP output. tap.h is the C twin.
#
#   . "$(dirname "$0")/tap.sh"
#   tap_workdir sgname            # $work, removed on exit
#   check $? "what was checked"   # ok / not ok from an exit status
#   ...
#   tap_done                      # the plan, and the exit status

build=${SG_BUILDDIR:-.}
data=${SG_DATA:-../shared/data}
sgs="$build/slicegpt-stream"
stories="$data/stories260K/stories260K.bin"
tok="$data/stories260K/tok512.bin"
text="$data/tinystories-valid-subset/tinystories_valid_first.txt"

for f in "$stories" "$tok" "$text"; do
    if [ ! -f "$f" ]; then
        echo "1..0 # SKIP $f not present"
        exit 0
    fi
done

tap_workdir() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || exit 1
    trap 'rm -rf "$work"' EXIT INT TERM
}

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=1; echo "not ok $n - $1"; }
check() { if [ "$1" -eq 0 ]; then ok "$2"; else not_ok "$2"; fi; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
diag() { sed 's/^/# /' "$@"; }
# one_line FILE PATTERN: FILE is one line, matching PATTERN
one_line() { [ "$(wc -l <"$1")" -eq 1 ] && grep -q -- "$2" "$1"; }
tap_done() { echo "1..$n"; exit $failed; }
