#!/usr/bin/env bash
# What an MCP tool call costs next to the prompt API call it stands for, and what listing 200 tools
# costs (issue 17's targets: a `tools/call` of a prompt tool at most 1.2x the prompt API call's
# instructions; `tools/list` of 200 tools under 1 ms of proxy CPU).
#
#   bash bench/mcp.sh          # 3,000 calls after 300 to warm up
#   bash bench/mcp.sh 5000     # another count
#   MCP_BENCH_BASELINE=/path/to/older/tollgate-proxy bash bench/mcp.sh
#                              # the same figures for an older proxy binary too, in the same run
#   MCP_BENCH_PORTS=18300 bash bench/mcp.sh
#                              # other ports (base, base+5, base+6), when another bench holds 18200-18206
#
# Both calls send the same ~1 KB prompt variables to the benchmark route's prompt API `bench-prompt`
# (bench/src/snapshot.rs) — as `POST <prefix>/prompts/bench-prompt`, and as a 2026-07-28 `tools/call`
# of the tool `bench-prompt` at `POST <prefix>/mcp` — with their whole admission (key, subscription,
# limits, access log) and the same upstream answer. Instructions are counted by callgrind, for the
# proxy only (curl, one process for all calls, is the client). The 200 tools are the operations of a
# second route's REST service (an OpenAPI document of 200 operations, each with a path and a query
# parameter), listed by `tools/list` against the release proxy without valgrind; its CPU time comes
# from /proc. Needs valgrind and curl. Not part of the test suite.
set -euo pipefail
say_as=mcp-bench
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

calls="${1:-3000}"
ports="${MCP_BENCH_PORTS:-18200}"
upstream_port="$ports"
proxy_port=$((ports + 5))
admin_port=$((ports + 6))
# shellcheck source=bench/callgrind_setup.sh
source bench/callgrind_setup.sh

ns="$(echo "$prefix" | cut -d/ -f2)"
python3 - "$work" "$ns" "$upstream_port" <<'PY'
import json, sys
work, ns, port = sys.argv[1], sys.argv[2], sys.argv[3]
prose = ("lorem ipsum dolor sit amet " * 40)[:820]
meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}}
call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "bench-prompt", "arguments": {"text": prose}, "_meta": meta}}
open(f"{work}/tools_call.json", "w").write(json.dumps(call))
listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}
open(f"{work}/tools_list.json", "w").write(json.dumps(listing))
paths = {}
for i in range(200):
    paths[f"/things{i}/{{id}}"] = {"get": {
        "operationId": f"getThing{i}",
        "summary": f"Reads thing kind {i} by id.",
        "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "fields", "in": "query", "schema": {"type": "string"},
             "description": "Fields to return, comma-separated."},
        ],
    }}
doc = json.dumps({"openapi": "3.1.0", "info": {"title": "tools", "version": "1"}, "paths": paths})
with open(f"{work}/snapshot.yaml", "a") as out:
    out.write(f"""---
apiVersion: v1
kind: ConfigMap
metadata: {{name: mcp-tools-openapi, namespace: {ns}, labels: {{tollgate.dev/config: "true"}}}}
data:
  openapi.json: '{doc}'
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: mcp-tools, namespace: {ns}}}
spec:
  prefix: /{ns}/mcp-tools
  stage: Published
  approval: Automatic
  models:
    - name: bench-chat
      backends: [{{provider: upstream}}]
  limits: {{requestsPerMinute: 100000000, tokensPerMinute: 1000000000000}}
  rest:
    backend: {{url: "http://127.0.0.1:{port}/v1"}}
    openAPI: {{configMapRef: {{name: mcp-tools-openapi}}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata: {{name: c-00000-mcp-tools, namespace: {ns}}}
spec:
  consumer: c-00000
  route: {{name: mcp-tools}}
""")
PY

mcp_headers=(-H "mcp-protocol-version: 2026-07-28" -H "mcp-method: tools/call" -H "mcp-name: bench-prompt")

# `n` POSTs of `body` to `url` on one connection, with `extra` headers; prints how many answered 200.
load() {
    local url="$1" n="$2" body="$3" config="$work/curl.conf"
    shift 3
    : >"$config"
    for _ in $(seq "$n"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >>"$config"; done
    curl -s -K "$config" -H "authorization: Bearer $key" -H "content-type: application/json" "$@" \
        --data-binary "@$body" -w '%{http_code}\n' | grep -c '^200$' || true
}

# Prints instructions per call of one kind of call.
count() {
    local kind="$1" proxy_bin="${2:-$target/release/tollgate-proxy}" out="$work/callgrind.out" url body extra=()
    rm -f "$out"*
    valgrind --tool=callgrind --callgrind-out-file="$out" "$proxy_bin" \
        standalone "$work/snapshot.yaml" --poll-interval 1h --listen "127.0.0.1:$proxy_port" \
        --admin-listen "127.0.0.1:$admin_port" >/dev/null 2>&1 &
    local vg=$!
    if [ "$kind" = prompt ]; then
        url="http://127.0.0.1:$proxy_port$prefix/prompts/bench-prompt" body="$work/prompt.json"
    else
        url="http://127.0.0.1:$proxy_port$prefix/mcp" body="$work/tools_call.json" extra=("${mcp_headers[@]}")
    fi
    wait_port "$proxy_port" || { say "the proxy did not start"; kill "$vg"; return 1; }
    load "$url" 300 "$body" "${extra[@]}" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    local ok
    ok="$(load "$url" "$calls" "$body" "${extra[@]}")"
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    [ "$ok" = "$calls" ] || { say "$kind: $ok of $calls calls answered 200"; return 1; }
    local total
    total="$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')"
    echo $((total / calls))
}

# CPU milliseconds of the proxy per `tools/list` of the 200-tool route, and the tools listed.
list_cpu() {
    "${1:-$target/release/tollgate-proxy}" standalone "$work/snapshot.yaml" --poll-interval 1h \
        --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" --access-log off >/dev/null 2>&1 &
    local proxy=$! n=1000
    pids+=("$proxy")
    wait_port "$proxy_port" || { say "the proxy did not start"; return 1; }
    local url="http://127.0.0.1:$proxy_port/$ns/mcp-tools/mcp"
    local listed
    listed="$(curl -s "$url" -H "authorization: Bearer $key" -H "content-type: application/json" \
        -H "mcp-protocol-version: 2026-07-28" -H "mcp-method: tools/list" --data-binary "@$work/tools_list.json" |
        python3 -c 'import json, sys; print(len(json.load(sys.stdin)["result"]["tools"]))')"
    load "$url" 100 "$work/tools_list.json" -H "mcp-protocol-version: 2026-07-28" -H "mcp-method: tools/list" >/dev/null
    local ticks=$(getconf CLK_TCK) before after ok
    before="$(awk '{ print $14 + $15 }' "/proc/$proxy/stat")"
    ok="$(load "$url" "$n" "$work/tools_list.json" -H "mcp-protocol-version: 2026-07-28" -H "mcp-method: tools/list")"
    after="$(awk '{ print $14 + $15 }' "/proc/$proxy/stat")"
    kill "$proxy"
    [ "$ok" = "$n" ] || { say "tools/list: $ok of $n answered 200"; return 1; }
    awk -v b="$before" -v a="$after" -v t="$ticks" -v n="$n" -v l="$listed" \
        'BEGIN { printf "%d tools: %.3f ms of proxy CPU per tools/list (%d calls)\n", l, (a - b) / t * 1000 / n, n }'
}

# Prints the table and the tools/list figure for one proxy binary.
measure() {
    local bin="$1" prompt tool
    prompt="$(count prompt "$bin")"
    tool="$(count tool "$bin")"
    printf '| call | instructions per call | / prompt API call |\n|---|---|---|\n'
    printf '| prompt API (POST <prefix>/prompts/bench-prompt) | %s | 1.00 |\n' "$prompt"
    printf '| MCP tools/call of bench-prompt (POST <prefix>/mcp) | %s | %s |\n' "$tool" \
        "$(awk -v a="$tool" -v b="$prompt" 'BEGIN { printf "%.2f", a / b }')"
    list_cpu "$bin"
}

if [ -n "${MCP_BENCH_BASELINE:-}" ]; then
    echo "baseline: $MCP_BENCH_BASELINE"
    measure "$MCP_BENCH_BASELINE"
    echo
    echo "this tree: $target/release/tollgate-proxy"
fi
measure "$target/release/tollgate-proxy"
