#!/usr/bin/env bash
# What a Responses API call translated to Anthropic costs next to the same chat call translated to
# Anthropic (issue 24's target: at most 1.2x the chat call's instructions).
#
#   bash bench/responses.sh          # 3,000 calls of each after 300 to warm up
#   bash bench/responses.sh 5000     # another count
#   RESPONSES_BENCH_PORTS=18400 bash bench/responses.sh
#                                    # other ports (base, base+5, base+6)
#   RESPONSES_BENCH_KEEP=/tmp/prof bash bench/responses.sh
#                                    # also keep each kind's callgrind profile there
#                                    # (callgrind_annotate --inclusive=yes /tmp/prof/responses.out)
#
# Both calls go to one route whose model `bench-claude` is served by an Anthropic provider at the
# benchmark upstream (which answers `/v1/messages` with a whole ~1 KB message): `POST
# <prefix>/v1/chat/completions` with the ~1 KB chat body of the other benches, and `POST
# <prefix>/v1/responses` with the same system prompt as `instructions`, the same user message as
# `input`, the same temperature and token limit. Each is translated to Anthropic's Messages format and
# its answer back, with the whole admission (key, subscription, limits, access log) and the same
# upstream answer. Instructions are counted by callgrind, for the proxy only (curl, one process for
# all calls, is the client). Needs valgrind and curl. Not part of the test suite.
set -euo pipefail
say_as=responses-bench
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

calls="${1:-3000}"
ports="${RESPONSES_BENCH_PORTS:-18400}"
upstream_port="$ports"
proxy_port=$((ports + 5))
admin_port=$((ports + 6))
# shellcheck source=bench/callgrind_setup.sh
source bench/callgrind_setup.sh

ns="$(echo "$prefix" | cut -d/ -f2)"
python3 - "$work" "$ns" "$upstream_port" <<'PY'
import json, sys
work, ns, port = sys.argv[1], sys.argv[2], sys.argv[3]
chat = json.load(open(f"{work}/chat.json"))
chat["model"] = "bench-claude"
system, user = chat["messages"][0]["content"], chat["messages"][1]["content"]
responses = {"model": "bench-claude", "instructions": system,
             "input": [{"role": "user", "content": user}],
             "temperature": chat["temperature"], "max_output_tokens": chat["max_tokens"]}
open(f"{work}/claude_chat.json", "w").write(json.dumps(chat))
open(f"{work}/claude_responses.json", "w").write(json.dumps(responses))
with open(f"{work}/snapshot.yaml", "a") as out:
    out.write(f"""---
apiVersion: v1
kind: Secret
metadata: {{name: bench-anthropic-key, namespace: {ns}, labels: {{tollgate.dev/secret: "true"}}}}
stringData: {{apiKey: sk-ant-bench-key-0000000000000000}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: anthropic, namespace: {ns}}}
spec:
  type: Anthropic
  endpoint: http://127.0.0.1:{port}
  credentials: {{secretRefs: [{{name: bench-anthropic-key}}]}}
  models:
    - name: bench-claude
      pricing: {{inputPerMillion: 3, outputPerMillion: 15}}
  timeouts: {{connect: 2s, firstByte: 30s, total: 120s}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: claude, namespace: {ns}}}
spec:
  prefix: /{ns}/claude
  stage: Published
  approval: Automatic
  models:
    - name: bench-claude
      backends: [{{provider: anthropic}}]
  limits: {{requestsPerMinute: 100000000, tokensPerMinute: 1000000000000}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata: {{name: c-00000-claude, namespace: {ns}}}
spec:
  consumer: c-00000
  route: {{name: claude}}
""")
PY

# `n` POSTs of `body` to `url` on one connection; prints how many answered 200.
load() {
    local url="$1" n="$2" body="$3" config="$work/curl.conf"
    : >"$config"
    for _ in $(seq "$n"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >>"$config"; done
    curl -s -K "$config" -H "authorization: Bearer $key" -H "content-type: application/json" \
        --data-binary "@$body" -w '%{http_code}\n' | grep -c '^200$' || true
}

# Prints instructions per call of one kind of call (chat or responses).
count() {
    local kind="$1" out="$work/callgrind.out" url body
    rm -f "$out"*
    valgrind --tool=callgrind --callgrind-out-file="$out" "$target/release/tollgate-proxy" \
        standalone "$work/snapshot.yaml" --poll-interval 1h --listen "127.0.0.1:$proxy_port" \
        --admin-listen "127.0.0.1:$admin_port" >/dev/null 2>&1 &
    local vg=$!
    if [ "$kind" = chat ]; then
        url="http://127.0.0.1:$proxy_port/$ns/claude/v1/chat/completions" body="$work/claude_chat.json"
    else
        url="http://127.0.0.1:$proxy_port/$ns/claude/v1/responses" body="$work/claude_responses.json"
    fi
    wait_port "$proxy_port" || { say "the proxy did not start"; kill "$vg"; return 1; }
    local first
    first="$(curl -s "$url" -H "authorization: Bearer $key" -H "content-type: application/json" \
        --data-binary "@$body")"
    echo "$first" | python3 -c 'import json, sys; d = json.load(sys.stdin); assert d.get("object") in ("chat.completion", "response"), d' ||
        { say "$kind: the first answer is not a translated answer"; kill "$vg"; return 1; }
    load "$url" 300 "$body" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    local ok
    ok="$(load "$url" "$calls" "$body")"
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    [ "$ok" = "$calls" ] || { say "$kind: $ok of $calls calls answered 200"; return 1; }
    if [ -n "${RESPONSES_BENCH_KEEP:-}" ]; then
        mkdir -p "$RESPONSES_BENCH_KEEP"
        cp "$out.1" "$RESPONSES_BENCH_KEEP/$kind.out"
    fi
    local total
    total="$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')"
    echo $((total / calls))
}

chat="$(count chat)"
responses="$(count responses)"
printf '| call, translated to Anthropic | instructions per call | / chat call |\n|---|---|---|\n'
printf '| chat (POST <prefix>/v1/chat/completions) | %s | 1.00 |\n' "$chat"
printf '| Responses (POST <prefix>/v1/responses) | %s | %s |\n' "$responses" \
    "$(awk -v a="$responses" -v b="$chat" 'BEGIN { printf "%.2f", a / b }')"
