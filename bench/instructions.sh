#!/usr/bin/env bash
# User-space instructions per call, Tollgate next to the minimal hyper forwarder, counted by callgrind.
#
#   bash bench/instructions.sh             # chat and embeddings, 3,000 calls each after 300 to warm up
#   bash bench/instructions.sh chat,prompt # a prompt API call next to the same chat call
#   bash bench/instructions.sh chat 5000   # one scenario, another count
#
# Wall-clock figures on a shared two-CPU machine move by 20% from run to run; instruction counts do not
# (the kernel's share is left out, and so is SHA-NI: valgrind runs the software SHA-256). Use this to
# tell whether a change to the hot path helps; use `bash bench/run.sh` for the figures the targets are
# about. Needs valgrind (Debian package, installed here if missing) and oha (see run.sh). Not part of
# the test suite.
set -euo pipefail
say_as=instructions
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

oha="$(command -v oha || echo "$cache/cargo-bin/bin/oha")"
[ -x "$oha" ] || { say "no oha: run bash bench/run.sh --quick once first"; exit 1; }
scenarios="${1:-chat,embeddings}"
calls="${2:-3000}"
upstream_port=18180
proxy_port=18185
# shellcheck source=bench/callgrind_setup.sh
source bench/callgrind_setup.sh  # common.sh has moved to the repository root

# Prints instructions per call for one path and scenario.
count() {
    local path="$1" scenario="$2" out="$work/callgrind.out"
    rm -f "$out"*
    if [ "$path" = forwarder ]; then
        valgrind --tool=callgrind --callgrind-out-file="$out" "$target/release/bench-forwarder" \
            --listen "127.0.0.1:$proxy_port" --upstream "127.0.0.1:$upstream_port" >/dev/null 2>&1 &
    else
        valgrind --tool=callgrind --callgrind-out-file="$out" "$target/release/tollgate-proxy" \
            standalone "$work/snapshot.yaml" --poll-interval 1h --listen "127.0.0.1:$proxy_port" \
            --admin-listen 127.0.0.1:18186 >/dev/null 2>&1 &
    fi
    local vg=$!
    wait_port "$proxy_port" || { say "$path did not start"; kill "$vg"; return 1; }
    local endpoint=v1/chat/completions
    [ "$scenario" = embeddings ] && endpoint=v1/embeddings
    # The forwarder knows no prompts: its baseline for a prompt call is the same chat call.
    [ "$scenario" = prompt ] && [ "$path" != forwarder ] && endpoint=prompts/bench-prompt
    local body="$scenario"
    [ "$scenario" = prompt ] && [ "$path" = forwarder ] && body=chat
    local url="http://127.0.0.1:$proxy_port$prefix/$endpoint"
    local load=("$oha" --no-tui -m POST -H "authorization: Bearer $key" -H "content-type: application/json"
        -D "$work/$body.json" -c 8)
    "${load[@]}" -n 300 "$url" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    "${load[@]}" -n "$calls" "$url" >"$work/oha.txt"
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    grep -q "\[200\] $calls " "$work/oha.txt" || { say "$path: not every call answered 200"; return 1; }
    local total
    total="$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')"
    echo $((total / calls))
}

printf '| scenario | forwarder | tollgate | tollgate / forwarder |\n|---|---|---|---|\n'
for scenario in ${scenarios//,/ }; do
    fwd="$(count forwarder "$scenario")"
    tg="$(count tollgate "$scenario")"
    printf '| %s | %s | %s | %s |\n' "$scenario" "$fwd" "$tg" \
        "$(awk -v a="$tg" -v b="$fwd" 'BEGIN { printf "%.2f", a / b }')"
done
