#!/usr/bin/env bash
# User-space instructions per call of a REST passthrough call through Tollgate next to the same call
# through the minimal hyper forwarder, counted by callgrind (issue 16's target: at most 1.2×).
#
#   bash bench/rest.sh          # 3,000 calls after 300 to warm up
#   bash bench/rest.sh 5000     # another count
#   REST_PORT_BASE=18290 bash bench/rest.sh  # other ports (18190, +5 and +6 by default)
#   REST_PROFILES=/tmp/p bash bench/rest.sh   # also keep each callgrind profile there, for
#                                             # callgrind_annotate --inclusive=yes /tmp/p/tollgate.out
#
# Both get the same ~1 KB chat body, one keep-alive connection, and the same upstream answer; Tollgate
# serves it as `POST <prefix>/api/chat/completions`, an operation of the benchmark route's REST service
# (see bench/src/snapshot.rs), with its whole admission (key, subscription, request limit, access log).
# The client is curl, one process for all calls: only the proxy under test runs under valgrind, so the
# client's own cost does not count. Needs valgrind and curl. Not part of the test suite.
set -euo pipefail
say_as=rest-bench
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

calls="${1:-3000}"
# Another run on the machine (bench/traces.sh uses the same ports) can be avoided with REST_PORT_BASE.
upstream_port=${REST_PORT_BASE:-18190}
proxy_port=$((upstream_port + 5))
admin_port=$((upstream_port + 6))
# shellcheck source=bench/callgrind_setup.sh
source bench/callgrind_setup.sh  # common.sh has moved to the repository root

# `n` POSTs of chat.json to `url` on one connection; prints how many answered 200.
load() {
    local url="$1" n="$2" config="$work/curl.conf"
    : >"$config"
    for _ in $(seq "$n"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >>"$config"; done
    curl -s -K "$config" -H "authorization: Bearer $key" -H "content-type: application/json" \
        --data-binary "@$work/chat.json" -w '%{http_code}\n' | grep -c '^200$' || true
}

# Prints instructions per call for one path.
count() {
    local path="$1" out="$work/callgrind.out" url
    rm -f "$out"*
    if [ "$path" = forwarder ]; then
        valgrind --tool=callgrind --callgrind-out-file="$out" "$target/release/bench-forwarder" \
            --listen "127.0.0.1:$proxy_port" --upstream "127.0.0.1:$upstream_port" >/dev/null 2>&1 &
        url="http://127.0.0.1:$proxy_port$prefix/v1/chat/completions"
    else
        valgrind --tool=callgrind --callgrind-out-file="$out" "$target/release/tollgate-proxy" \
            standalone "$work/snapshot.yaml" --poll-interval 1h --listen "127.0.0.1:$proxy_port" \
            --admin-listen "127.0.0.1:$admin_port" >/dev/null 2>&1 &
        url="http://127.0.0.1:$proxy_port$prefix/api/chat/completions"
        # For comparison: the same body as a model call through the route.
        [ "$path" = tollgate-chat ] && url="http://127.0.0.1:$proxy_port$prefix/v1/chat/completions"
    fi
    local vg=$!
    wait_port "$proxy_port" || { say "$path did not start"; kill "$vg"; return 1; }
    load "$url" 300 >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    local ok
    ok="$(load "$url" "$calls")"
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    [ "$ok" = "$calls" ] || { say "$path: $ok of $calls calls answered 200"; return 1; }
    if [ -n "${REST_PROFILES:-}" ]; then mkdir -p "$REST_PROFILES" && cp "$out.1" "$REST_PROFILES/$path.out"; fi
    local total
    total="$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')"
    echo $((total / calls))
}

printf '| call | forwarder | tollgate | tollgate / forwarder |\n|---|---|---|---|\n'
fwd="$(count forwarder)"
tg="$(count tollgate)"
chat="$(count tollgate-chat)"
ratio() { awk -v a="$1" -v b="$fwd" 'BEGIN { printf "%.2f", a / b }'; }
printf '| REST passthrough (POST <prefix>/api/chat/completions) | %s | %s | %s |\n' "$fwd" "$tg" "$(ratio "$tg")"
printf '| model call, for comparison (POST <prefix>/v1/chat/completions) | %s | %s | %s |\n' "$fwd" "$chat" "$(ratio "$chat")"
