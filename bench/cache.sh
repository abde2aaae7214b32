#!/usr/bin/env bash
# What a response-cache hit costs next to a miss, and how much memory the cache's byte budget really
# takes (issue 18's targets: a hit at most half the proxy CPU of a miss through the Fake provider, same
# body, same run; the proxy's RSS under a load of distinct cacheable calls within its baseline RSS plus
# `--cache-max-bytes`).
#
#   bash bench/cache.sh              # 3,000 calls of each kind after 300 to warm up; 40,000 for RSS
#                                    # (about 4 minutes)
#   bash bench/cache.sh 5000 80000   # other counts
#   CACHE_BENCH_BUDGET_MIB=16 bash bench/cache.sh
#                                    # another byte budget for the RSS part (default 32 MiB)
#   CACHE_BENCH_CPU_CALLS=50000 bash bench/cache.sh
#                                    # calls of each kind (twice) for the CPU-time part (default 50,000)
#   CACHE_BENCH_PORTS=18500 bash bench/cache.sh
#                                    # other ports (base, base+5, base+6)
#   proxy_bin=/tmp/tollgate-proxy bash bench/cache.sh
#                                    # another build of the proxy (an older commit's, to compare)
#
# The calls go to a route `cached` of the benchmark snapshot, whose model `fake-cached` is served by
# the built-in Fake provider (answered in-process, no latency, 256 completion tokens, ~1.9 KB
# answers), with `spec.cache` (Exact, Consumer scope): the ~1 KB chat body of the other benches with
# its whole admission (key, subscription, limits, access log). Instructions are counted by callgrind
# for the proxy only, in ONE proxy process: the same body answered from the cache (hit), the same body
# with `Cache-Control: no-cache` (looked up not, called, and stored again: a miss), 3,000 bodies that
# differ in one word (each looked up, called and stored: a miss of a new question), and the same body
# with `Cache-Control: no-store` (no cache work at all: the call as if the route had no cache).
#
# CPU time: the release proxy without valgrind, where the CPU's SHA extensions (which valgrind hides)
# are used; the run time of its threads (/proc/<pid>/task/*/schedstat) over the same hit, no-cache and
# no-store calls.
#
# RSS: the release proxy without valgrind, `--cache-max-bytes` of the budget, the access log off,
# sent the given number of distinct cacheable calls by one keep-alive client; once with
# `Cache-Control: no-store` (the baseline: the same calls, nothing stored), once without (every answer
# stored, the oldest evicted). RSS is read from /proc after each quarter of the load. Needs valgrind,
# curl and python3. Not part of the test suite.
set -euo pipefail
say_as=cache-bench
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

calls="${1:-3000}"
distinct="${2:-40000}"
cpu_calls="${CACHE_BENCH_CPU_CALLS:-50000}"
budget_mib="${CACHE_BENCH_BUDGET_MIB:-32}"
ports="${CACHE_BENCH_PORTS:-18500}"
upstream_port="$ports"
proxy_port=$((ports + 5))
admin_port=$((ports + 6))
# shellcheck source=bench/callgrind_setup.sh
source bench/callgrind_setup.sh

ns="$(echo "$prefix" | cut -d/ -f2)"
python3 - "$work" "$ns" "$calls" <<'PY'
import json, os, sys
work, ns, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
chat = json.load(open(f"{work}/chat.json"))
chat["model"] = "fake-cached"
open(f"{work}/cached_chat.json", "w").write(json.dumps(chat))
# Questions that differ in one word, of the same size (the warm-up's and the count's apart).
os.makedirs(f"{work}/distinct")
with open(f"{work}/distinct.list", "w") as names:
    for i in range(calls + 300):
        body = json.loads(json.dumps(chat))
        body["messages"][1]["content"] = f"q{i:07d} " + body["messages"][1]["content"][9:]
        path = f"{work}/distinct/{i}.json"
        open(path, "w").write(json.dumps(body))
        names.write(path + "\n")
with open(f"{work}/snapshot.yaml", "a") as out:
    out.write(f"""---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: fake, namespace: {ns}}}
spec:
  type: Fake
  models:
    - name: fake-cached
      pricing: {{inputPerMillion: 1, outputPerMillion: 2}}
  fake: {{latency: 0ms, chunkInterval: 0ms, completionTokens: 256}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: cached, namespace: {ns}}}
spec:
  prefix: /{ns}/cached
  stage: Published
  approval: Automatic
  models:
    - name: fake-cached
      backends: [{{provider: fake}}]
  limits: {{requestsPerMinute: 100000000, tokensPerMinute: 1000000000000}}
  cache: {{mode: Exact, ttl: 1h, scope: Consumer}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata: {{name: c-00000-cached, namespace: {ns}}}
spec:
  consumer: c-00000
  route: {{name: cached}}
""")
PY

url="http://127.0.0.1:$proxy_port/$ns/cached/v1/chat/completions"
body="$work/cached_chat.json"
head -n 300 "$work/distinct.list" >"$work/distinct.warm"
tail -n +301 "$work/distinct.list" >"$work/distinct.count"

# The answer to the bench body, and the cache header a call of it gets.
cache_header() {
    curl -s -D - -o /dev/null "$url" -H "authorization: Bearer $key" -H "content-type: application/json" \
        "$@" --data-binary "@$body" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-tollgate-cache" { print $2 }'
}

# --- Instructions: every kind of call in one proxy process.
say "counting instructions (callgrind, $calls calls of each kind)"
callgrind_proxy
first="$(cache_header)"
second="$(cache_header)"
[ "$first/$second" = "miss/hit" ] || { say "expected miss then hit, got $first/$second"; exit 1; }
bytes="$(curl -s "$url" -H "authorization: Bearer $key" -H "content-type: application/json" \
    --data-binary "@$body" | wc -c)"
post_many "$url" 300 "$body" >/dev/null
post_many "$url" 300 "$body" -H "cache-control: no-cache" >/dev/null
post_many "$url" 300 "$body" -H "cache-control: no-store" >/dev/null
post_each "$url" "$work/distinct.warm" >/dev/null
callgrind_control -z "$vg" >/dev/null 2>&1
declare -A per_call
check() { [ "$1" = "$calls" ] || { say "$2: $1 of $calls calls answered 200"; exit 1; }; }
check "$(post_many "$url" "$calls" "$body")" hit
per_call[hit]=$(($(callgrind_dump) / calls))
check "$(post_many "$url" "$calls" "$body" -H "cache-control: no-cache")" no-cache
per_call[no_cache]=$(($(callgrind_dump) / calls))
check "$(post_each "$url" "$work/distinct.count")" distinct
per_call[distinct]=$(($(callgrind_dump) / calls))
check "$(post_many "$url" "$calls" "$body" -H "cache-control: no-store")" no-store
per_call[no_store]=$(($(callgrind_dump) / calls))
[ "$(cache_header)" = hit ] || { say "the last call was not a hit"; exit 1; }
kill "$vg"
wait "$vg" 2>/dev/null || true

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "Instructions per call, one proxy process under callgrind, $calls calls of each ($bytes-byte answers):"
echo
printf '| call | x-tollgate-cache | instructions per call | / miss (no-cache) |\n|---|---|---|---|\n'
printf '| the same body again | hit | %s | %s |\n' "${per_call[hit]}" "$(ratio "${per_call[hit]}" "${per_call[no_cache]}")"
printf '| the same body, `Cache-Control: no-cache` | miss | %s | 1.00 |\n' "${per_call[no_cache]}"
printf '| a new question of the same size | miss | %s | %s |\n' "${per_call[distinct]}" "$(ratio "${per_call[distinct]}" "${per_call[no_cache]}")"
printf '| the same body, `Cache-Control: no-store` | bypass | %s | %s |\n' "${per_call[no_store]}" "$(ratio "${per_call[no_store]}" "${per_call[no_cache]}")"
echo

# --- Proxy CPU time outside valgrind. Valgrind hides the CPU's SHA extensions, so callgrind counts
# SHA-256 (most of a hit's key) in portable code; the proxy's own CPU time over many calls shows a
# hit as the hardware runs it, where it has them. The time is the run time of all the proxy's
# threads (/proc/<pid>/task/*/schedstat, nanoseconds, user and system together: /proc's tick-sampled
# user/system split is too coarse for this). The same three calls of the same body, twice over.
cpu_ns() { cat "/proc/$1"/task/*/schedstat | awk '{ ns += $1 } END { printf "%.0f", ns }'; }
# The user-space part alone, in clock ticks (`utime`, field 14 of each thread's stat; thread names
# have no spaces): coarse, but over ~100,000 calls thousands of ticks, enough to split the proxy's own
# work from the kernel's socket work, which a hit and a miss share.
user_ticks() { cat "/proc/$1"/task/*/stat | awk '{ t += $14 } END { printf "%.0f", t }'; }
say "proxy CPU time outside valgrind ($cpu_calls calls of each kind, twice)"
"${proxy_bin:-$target/release/tollgate-proxy}" standalone "$work/snapshot.yaml" --poll-interval 1h \
    --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" >/dev/null 2>&1 &
cpu_proxy=$!
pids+=("$cpu_proxy")
wait_port "$proxy_port" || { say "the proxy did not start"; exit 1; }
[ "$(cache_header)/$(cache_header)" = "miss/hit" ] || { say "expected miss then hit"; exit 1; }
post_many "$url" 1000 "$body" >/dev/null
post_many "$url" 1000 "$body" -H "cache-control: no-cache" >/dev/null
declare -A cpu user
for kind in hit no-cache no-store hit no-cache no-store; do
    extra=()
    [ "$kind" = hit ] || extra=(-H "cache-control: $kind")
    t0="$(cpu_ns "$cpu_proxy")"
    u0="$(user_ticks "$cpu_proxy")"
    answered="$(post_many "$url" "$cpu_calls" "$body" "${extra[@]}")"
    [ "$answered" = "$cpu_calls" ] || { say "$kind: $answered of $cpu_calls calls answered 200"; exit 1; }
    t1="$(cpu_ns "$cpu_proxy")"
    u1="$(user_ticks "$cpu_proxy")"
    cpu[$kind]=$(awk -v a="${cpu[$kind]:-0}" -v d="$((t1 - t0))" 'BEGIN { printf "%.0f", a + d }')
    user[$kind]=$(( ${user[$kind]:-0} + u1 - u0 ))
done
kill "$cpu_proxy"
wait "$cpu_proxy" 2>/dev/null || true
us() { awk -v t="$1" -v n="$cpu_calls" 'BEGIN { printf "%.1f", t / 1000 / (2 * n) }'; }
echo "Proxy CPU time per call outside valgrind (release, access log on, one connection; $((2 * cpu_calls)) calls of"
echo "each kind in two rounds; run time of all the proxy's threads):"
echo
hz="$(getconf CLK_TCK)"
uus() { awk -v t="$1" -v n="$cpu_calls" -v hz="$hz" 'BEGIN { printf "%.1f", t * 1e6 / hz / (2 * n) }'; }
printf '| call | x-tollgate-cache | CPU µs per call | / miss (no-cache) | of it user space, µs | user / miss (no-cache) |\n|---|---|---|---|---|---|\n'
printf '| the same body again | hit | %s | %s | %s | %s |\n' "$(us "${cpu[hit]}")" "$(ratio "${cpu[hit]}" "${cpu[no-cache]}")" "$(uus "${user[hit]}")" "$(ratio "${user[hit]}" "${user[no-cache]}")"
printf '| the same body, `Cache-Control: no-cache` | miss | %s | 1.00 | %s | 1.00 |\n' "$(us "${cpu[no-cache]}")" "$(uus "${user[no-cache]}")"
printf '| the same body, `Cache-Control: no-store` | bypass | %s | %s | %s | %s |\n' "$(us "${cpu[no-store]}")" "$(ratio "${cpu[no-store]}" "${cpu[no-cache]}")" "$(uus "${user[no-store]}")" "$(ratio "${user[no-store]}" "${user[no-cache]}")"
echo

# --- RSS: distinct cacheable calls against a small byte budget.
# Sends `n` distinct questions (their number after `offset`) over one connection with the given
# extra header, printing the proxy's RSS in KiB after each quarter.
rss_load() {
    local pid="$1" n="$2" extra="$3"
    python3 - "$proxy_port" "/$ns/cached/v1/chat/completions" "$key" "$body" "$n" "$pid" "$extra" <<'PY'
import http.client, json, sys
port, path, key, body_file, n, pid, extra = sys.argv[1:8]
n = int(n)
chat = json.load(open(body_file))
text = chat["messages"][1]["content"][9:]
headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
if extra:
    name, value = extra.split(": ", 1)
    headers[name] = value
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
conn = http.client.HTTPConnection("127.0.0.1", int(port))
marks = []
for i in range(n):
    chat["messages"][1]["content"] = f"r{i:07d} " + text
    conn.request("POST", path, json.dumps(chat), headers)
    answer = conn.getresponse()
    answer.read()
    if answer.status != 200:
        sys.exit(f"call {i}: status {answer.status}")
    if (i + 1) % (n // 4) == 0:
        marks.append(str(rss()))
print(" ".join(marks))
PY
}

metric() {
    curl -s "http://127.0.0.1:$admin_port/metrics" | awk -v m="$1" '$1 == m { print $2; exit }'
}

# Prints "idle RSS, RSS after each quarter (KiB), cache bytes, entries, evictions" for one load.
rss_run() {
    local extra="$1"
    "${proxy_bin:-$target/release/tollgate-proxy}" standalone "$work/snapshot.yaml" --poll-interval 1h \
        --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" --access-log off \
        --cache-max-bytes $((budget_mib << 20)) >/dev/null 2>&1 &
    local proxy=$!
    pids+=("$proxy")
    wait_port "$proxy_port" || { say "the proxy did not start"; return 1; }
    sleep 1
    local idle marks
    idle="$(awk '/^VmRSS:/ { print $2 }' "/proc/$proxy/status")"
    marks="$(rss_load "$proxy" "$distinct" "$extra")"
    echo "$idle $marks $(metric tollgate_cache_bytes) $(metric tollgate_cache_entries) $(metric tollgate_cache_evictions_total)"
    kill "$proxy"
    wait "$proxy" 2>/dev/null || true
}

say "RSS under $distinct distinct calls, --cache-max-bytes ${budget_mib} MiB"
read -r b_idle b1 b2 b3 b4 _ _ _ <<<"$(rss_run "cache-control: no-store")"
read -r c_idle c1 c2 c3 c4 c_bytes c_entries c_evicted <<<"$(rss_run "")"
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo "RSS of the proxy (release, access log off) under $distinct distinct cacheable calls over one connection,"
echo "--cache-max-bytes $budget_mib MiB; MiB after each quarter of the calls:"
echo
printf '| run | idle | 25%% | 50%% | 75%% | 100%% |\n|---|---|---|---|---|---|\n'
printf '| baseline: `Cache-Control: no-store` (nothing stored) | %s | %s | %s | %s | %s |\n' \
    "$(mib "$b_idle")" "$(mib "$b1")" "$(mib "$b2")" "$(mib "$b3")" "$(mib "$b4")"
printf '| every answer stored | %s | %s | %s | %s | %s |\n' \
    "$(mib "$c_idle")" "$(mib "$c1")" "$(mib "$c2")" "$(mib "$c3")" "$(mib "$c4")"
echo
over=$((c4 - b4))
echo "At the end the cache held $c_entries entries, $(mib $((${c_bytes%.*} / 1024))) MiB by its own count, after $c_evicted evictions."
echo "RSS above the baseline: $(mib "$over") MiB for a budget of $budget_mib MiB ($(ratio "$over" $((budget_mib * 1024))) of it)."
