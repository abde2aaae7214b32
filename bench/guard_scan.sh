#!/usr/bin/env bash
# Instructions one guardrail check costs, by text: the built-in detectors (all seven, masking) over the
# user message of the guardrails bench's chat requests (820 bytes), counted by callgrind in the proxy's
# release unit-test binary (`guard::tests::measure_a_check`, run with two counts; the difference divided
# by the extra checks, so start-up is left out). Then one streamed chat answer checked as the proxy
# checks it (`guard::tests::measure_a_stream`: the 22 events the bench's fake upstream sends for a
# stream, one event a read), for the prose and the mixed text.
#
#   bash bench/guard_scan.sh                  # prose sentences dates emails mixed digits; streams
#   GUARD_TEXTS="mixed dates" GUARD_STREAMS="" bash bench/guard_scan.sh
#
# The texts: `prose`, `mixed` and `digits` as `tollgate-bench body --text …` writes them (what
# bench/guardrails.sh sends); `dates` and `emails`, the mixed text with its addresses or its dates
# turned into words; `sentences`, prose with capitals, commas and full stops. Where a whole call's
# figures are wanted, use bench/guardrails.sh; this one tells what a change to the detectors does, in
# seconds. Needs valgrind (installed if missing). Not part of the test suite.
set -euo pipefail
say_as=guard_scan
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_valgrind
cargo build --release -p tollgate-bench >&2
binary="$(cargo test --release -p tollgate-proxy --lib --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')"
[ -x "$binary" ] || { say "no unit-test binary was built"; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for text in prose mixed digits; do
    "$target/release/tollgate-bench" body --text "$text" >"$work/$text.json"
done
python3 - "$work" <<'PY'
import json, re, sys
work = sys.argv[1]
def user(name):
    return json.load(open(f"{work}/{name}.json"))["messages"][1]["content"]
texts = {name: user(name) for name in ("prose", "mixed", "digits")}
mixed = texts["mixed"]
texts["dates"] = mixed.replace("ops@example.com", "ops at example")
texts["emails"] = re.sub(r"\b\d{4}-\d\d-\d\d\b", "tomorrow", mixed)
texts["sentences"] = ("The gateway routes each request to a model. Teams share one budget, and "
                      "quotas reset daily. " * 10)[:len(mixed)]
assert "@" not in texts["dates"] and "2026-" in texts["dates"]
assert "@" in texts["emails"] and "2026-" not in texts["emails"]
for name, text in texts.items():
    open(f"{work}/{name}.txt", "w").write(text)
PY

# Instructions counted for `$2` checks of text `$1`.
counted() {
    GUARD_TEXT_FILE="$work/$1.txt" N="$2" valgrind --tool=callgrind --callgrind-out-file="$work/cg" \
        "$binary" --ignored --exact guard::tests::measure_a_check --nocapture >"$work/out" 2>&1
    grep -q "masked a check" "$work/out" || { say "the measurement did not run"; cat "$work/out" >&2; exit 1; }
    # awk reads the whole report: stopping early would end callgrind_annotate with SIGPIPE.
    callgrind_annotate "$work/cg" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); t = $1 } END { print t }'
}

echo "| text | bytes | instructions a check | masked a check |"
echo "|---|---|---|---|"
for text in ${GUARD_TEXTS:-prose sentences dates emails mixed digits}; do
    low="$(counted "$text" 1000)"
    high="$(counted "$text" 2000)"
    masked="$(sed -n 's/^\([0-9]*\) masked a check/\1/p' "$work/out")"
    echo "| $text | $(wc -c <"$work/$text.txt") | $(((high - low) / 1000)) | $masked |"
done

# The streams: what the bench's fake upstream sends for a streamed chat request with each text.
streams="${GUARD_STREAMS-prose mixed}"
[ -n "$streams" ] || exit 0
cargo build --release -p tollgate-bench --bin bench-upstream >&2
port=18490
fake=""
trap '[ -z "$fake" ] || kill "$fake" 2>/dev/null; rm -rf "$work"' EXIT
streamed() {
    # `--text` picks what the fake answers with: a fresh fake per text.
    if [ -n "$fake" ]; then kill "$fake" 2>/dev/null; wait "$fake" 2>/dev/null || true; fi
    "$target/release/bench-upstream" --listen "127.0.0.1:$port" --text "$1" >/dev/null 2>&1 &
    fake=$!
    for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    "$target/release/tollgate-bench" body --text "$1" --stream >"$work/$1-stream.json"
    curl -sf -X POST "http://127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' \
        --data-binary @"$work/$1-stream.json" >"$work/$1.sse"
    grep -q '^data: \[DONE\]' "$work/$1.sse" || { say "the fake sent no whole stream for $1"; exit 1; }
}
# Instructions counted for `$2` checks of the stream of text `$1`.
stream_counted() {
    GUARD_STREAM_FILE="$work/$1.sse" N="$2" valgrind --tool=callgrind --callgrind-out-file="$work/cg" \
        "$binary" --ignored --exact guard::tests::measure_a_stream --nocapture >"$work/out" 2>&1
    grep -q "bytes written a stream" "$work/out" || { say "the measurement did not run"; cat "$work/out" >&2; exit 1; }
    callgrind_annotate "$work/cg" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); t = $1 } END { print t }'
}

echo
echo "| stream | events | bytes | instructions a stream |"
echo "|---|---|---|---|"
for text in $streams; do
    streamed "$text"
    low="$(stream_counted "$text" 200)"
    high="$(stream_counted "$text" 400)"
    events="$(sed -n 's/^\([0-9]*\) events.*/\1/p' "$work/out")"
    echo "| $text | $events | $(wc -c <"$work/$text.sse") | $(((high - low) / 200)) |"
done
