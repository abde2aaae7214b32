#!/usr/bin/env bash
# Instructions one guardrail check costs, by text: the built-in detectors (all seven, masking) over the
# guardrails bench's 820-byte texts, counted by callgrind in the proxy's release unit-test binary
# (`guard::tests::measure_a_check`, run with two counts; the difference divided by the extra checks, so
# start-up is left out).
#
#   bash bench/guard_scan.sh                  # prose sentences dates emails mixed
#   GUARD_TEXTS="mixed dates" bash bench/guard_scan.sh
#
# The texts: `prose` (lower-case words, no digit nor `@`: the quick look finds nothing to scan for),
# `sentences` (capitals, commas, full stops), `dates` (a date every 136 bytes), `emails` (an address
# every 136 bytes, masked) and `mixed` (both, as `bench/guardrails.sh`'s mixed text). Where a whole
# call's figures are wanted, use bench/guardrails.sh; this one tells what a change to the detectors
# does, in seconds. Needs valgrind (installed if missing). Not part of the test suite.
set -euo pipefail
say_as=guard_scan
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

command -v valgrind >/dev/null || {
    say "installing Debian's valgrind"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind
}
binary="$(cargo test --release -p tollgate-proxy --lib --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')"
[ -x "$binary" ] || { say "no unit-test binary was built"; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Instructions counted for `N` checks of text `$1`.
counted() {
    TEXT="$1" N="$2" valgrind --tool=callgrind --callgrind-out-file="$work/cg" "$binary" --ignored \
        --exact guard::tests::measure_a_check --nocapture >"$work/out" 2>&1
    grep -q "masked a check" "$work/out" || { say "the measurement did not run"; cat "$work/out" >&2; exit 1; }
    # awk reads the whole report: stopping early would end callgrind_annotate with SIGPIPE.
    callgrind_annotate "$work/cg" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); t = $1 } END { print t }'
}

echo "| text | instructions a check | masked a check |"
echo "|---|---|---|"
for text in ${GUARD_TEXTS:-prose sentences dates emails mixed}; do
    low="$(counted "$text" 1000)"
    high="$(counted "$text" 2000)"
    masked="$(sed -n 's/.*: \([0-9]*\) masked a check/\1/p' "$work/out")"
    echo "| $text | $(((high - low) / 1000)) | $masked |"
done
