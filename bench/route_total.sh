#!/usr/bin/env bash
# What a route's total (`AIRoute.spec.totalLimits`, issue 20) costs a chat call: user-space instructions
# per call (callgrind) of the proxy on the benchmark route as it is (its subscription limited) and with a
# total added, counted on the replica, in a real Redis (Debian's redis-server on loopback, outside
# valgrind) and in a one-node Redis in cluster mode, in the same run against the same upstream. On a plain
# Redis one admission script checks every scope; in cluster mode a route's total lies in a hash slot of
# its own and the call sends two admission scripts in one pipeline.
#
#   bash bench/route_total.sh         # 3,000 calls each after 300 to warm up
#   bash bench/route_total.sh 5000    # another count
#
# Needs valgrind and oha, as bench/instructions.sh does, and redis-server.
set -euo pipefail
say_as=route-total
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

oha="$(command -v oha || echo "$cache/cargo-bin/bin/oha")"
[ -x "$oha" ] || { say "no oha: run bash bench/run.sh --quick once first"; exit 1; }
command -v redis-server >/dev/null || { say "no redis-server (apt-get install redis-server)"; exit 1; }
calls="${1:-3000}"
upstream_port=18290
proxy_port=18295
admin_port=18296
redis_port=18297
cluster_port=18298
# shellcheck source=bench/callgrind_setup.sh
source bench/callgrind_setup.sh

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port" || { say "redis-server did not start"; exit 1; }
redis-server --port "$cluster_port" --bind 127.0.0.1 --save '' --appendonly no --cluster-enabled yes \
    --cluster-config-file "$work/nodes.conf" >"$work/cluster.log" 2>&1 &
pids+=($!)
wait_port "$cluster_port" || { say "redis-server (cluster mode) did not start"; exit 1; }
redis-cli -p "$cluster_port" cluster addslotsrange 0 16383 >/dev/null
for _ in $(seq 100); do
    redis-cli -p "$cluster_port" cluster info | grep -q '^cluster_state:ok' && break
    sleep 0.1
done

# The benchmark route with a total as high as its subscription's limits: counted, never refusing.
grep -q '^  limits: {requestsPerMinute: 100000000' "$work/snapshot.yaml" || { say "no route limits line"; exit 1; }
awk '{ print } /^  limits: \{requestsPerMinute: 100000000/ && !done {
    print "  totalLimits: {requestsPerMinute: 100000000, tokensPerMinute: 1000000000000}"; done = 1 }' \
    "$work/snapshot.yaml" >"$work/total.yaml"

# Prints instructions per chat call with the snapshot `file`, counting in the Redis on port `redis` (0:
# on the replica).
count() {
    local file="$1" redis="$2" out="$work/callgrind.out" args=()
    # Under valgrind a call runs some fifty times slower: a longer wait keeps every call counted in Redis.
    [ "$redis" = 0 ] || args=(--redis-url "redis://127.0.0.1:$redis/0" --redis-timeout 5s)
    [ "$redis" = 0 ] || redis-cli -p "$redis" flushall >/dev/null 2>&1 || true
    rm -f "$out"*
    valgrind --tool=callgrind --callgrind-out-file="$out" "$target/release/tollgate-proxy" \
        standalone "$file" --poll-interval 1h --listen "127.0.0.1:$proxy_port" \
        --admin-listen "127.0.0.1:$admin_port" "${args[@]}" >/dev/null 2>&1 &
    local vg=$!
    wait_port "$proxy_port" || { say "the proxy did not start"; kill "$vg"; return 1; }
    if [ "$redis" != 0 ]; then
        for _ in $(seq 100); do
            curl -s "http://127.0.0.1:$admin_port/metrics" | grep -q '^tollgate_limits_redis_up 1' && break
            sleep 0.2
        done
    fi
    local url="http://127.0.0.1:$proxy_port$prefix/v1/chat/completions"
    local load=("$oha" --no-tui -m POST -H "authorization: Bearer $key" -H "content-type: application/json"
        -D "$work/chat.json" -c 8)
    "${load[@]}" -n 300 "$url" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    "${load[@]}" -n "$calls" "$url" >"$work/oha.txt"
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    local up fallbacks
    up="$(curl -s "http://127.0.0.1:$admin_port/metrics" | awk '$1 == "tollgate_limits_redis_up" { print $2 }')"
    fallbacks="$(curl -s "http://127.0.0.1:$admin_port/metrics" | awk '$1 == "tollgate_limits_redis_fallbacks_total" { print $2 }')"
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    grep -q "\[200\] $calls " "$work/oha.txt" || { say "$file redis=$redis: not every call answered 200"; return 1; }
    [ "$redis" = 0 ] || { [ "$up" = 1 ] && [ "$fallbacks" = 0 ]; } ||
        { say "Redis was not used for the whole run (up $up, fallbacks $fallbacks)"; return 1; }
    local total
    total="$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')"
    echo $((total / calls))
}

local_plain="$(count "$work/snapshot.yaml" 0)"
local_total="$(count "$work/total.yaml" 0)"
redis_plain="$(count "$work/snapshot.yaml" "$redis_port")"
redis_total="$(count "$work/total.yaml" "$redis_port")"
cluster_plain="$(count "$work/snapshot.yaml" "$cluster_port")"
cluster_total="$(count "$work/total.yaml" "$cluster_port")"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
printf '| counting | subscription limited | with the route total too | ÷ |\n|---|---|---|---|\n'
printf '| on the replica | %s | %s | %s |\n' "$local_plain" "$local_total" "$(ratio "$local_total" "$local_plain")"
printf '| in Redis | %s | %s | %s |\n' "$redis_plain" "$redis_total" "$(ratio "$redis_total" "$redis_plain")"
printf '| in Redis, cluster mode | %s | %s | %s |\n' "$cluster_plain" "$cluster_total" "$(ratio "$cluster_total" "$cluster_plain")"
