#!/usr/bin/env bash
# What a moderation hook costs the proxy: user-space instructions per call (callgrind) of the
# benchmark route with an AIGuardrail whose one rule is a moderation webhook on the request and on
# the answer (two exchanges with a local moderation service per call), next to the same route
# without it, for a whole chat call and a streamed one (held until it ends, then moderated whole).
# All in the same run, against the same upstreams; the moderation service is a small Python server
# on loopback (bench/moderation_server.py), outside valgrind, answering `{"flagged": false}`.
#
#   bash bench/moderation.sh          # 1,000 calls per path after 300 to warm up
#   bash bench/moderation.sh 2000     # another count
#
# Needs valgrind and oha, as bench/instructions.sh does. Not part of the test suite.
set -euo pipefail
say_as=moderation
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

oha="$(command -v oha || echo "$cache/cargo-bin/bin/oha")"
[ -x "$oha" ] || { say "no oha: run bash bench/run.sh --quick once first"; exit 1; }
calls="${1:-1000}"
upstream_port=18210
proxy_port=18215
admin_port=18216
moderation_port=18217
# shellcheck source=bench/callgrind_setup.sh
source bench/callgrind_setup.sh

python3 bench/moderation_server.py --port "$moderation_port" >"$work/moderation.log" 2>&1 &
pids+=($!)
wait_port "$moderation_port" || { say "the moderation server did not start"; exit 1; }

sed 's/^  stage: Published$/  stage: Published\n  guardrails: [{name: bench-moderation}]/' \
    "$work/snapshot.yaml" >"$work/moderated.yaml"
cat >>"$work/moderated.yaml" <<YAML
---
apiVersion: tollgate.dev/v1alpha1
kind: AIGuardrail
metadata: {name: bench-moderation, namespace: bench-t00}
spec:
  appliesTo: Both
  rules:
    - name: hook
      action: Reject
      moderation:
        webhook: {url: "http://127.0.0.1:$moderation_port/hook"}
        timeout: 2s
        failureMode: Closed
YAML
grep -q 'guardrails: \[{name: bench-moderation}\]' "$work/moderated.yaml" ||
    { say "could not attach the guardrail"; exit 1; }
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
chat = json.load(open(f"{work}/chat.json"))
chat["stream"] = True
open(f"{work}/stream.json", "w").write(json.dumps(chat))
PY

# Prints instructions per call of the proxy serving snapshot `$1`, for body `$2`.
count() {
    local snapshot="$1" body="$2" out="$work/callgrind.out"
    rm -f "$out"*
    valgrind --tool=callgrind --callgrind-out-file="$out" "$target/release/tollgate-proxy" \
        standalone "$work/$snapshot.yaml" --poll-interval 1h --listen "127.0.0.1:$proxy_port" \
        --admin-listen "127.0.0.1:$admin_port" >/dev/null 2>&1 &
    local vg=$!
    wait_port "$proxy_port" || { say "the proxy did not start"; kill "$vg"; return 1; }
    local url="http://127.0.0.1:$proxy_port$prefix/v1/chat/completions"
    local load=("$oha" --no-tui -m POST -H "authorization: Bearer $key" -H "content-type: application/json"
        -D "$work/$body.json" -c 8)
    "${load[@]}" -n 300 "$url" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    "${load[@]}" -n "$calls" "$url" >"$work/oha.txt"
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    grep -q "\[200\] $calls " "$work/oha.txt" || { say "$snapshot/$body: not every call answered 200"; return 1; }
    local total
    total="$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')"
    echo $((total / calls))
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
printf '| call | without moderation | with the moderation webhook (request and answer) | ratio | exchanges the service answered (warm-up included) |\n|---|---|---|---|---|\n'
for call in chat stream; do
    plain="$(count snapshot "$call")"
    before="$(wc -l <"$work/moderation.log")"
    hooked="$(count moderated "$call")"
    asked=$(($(wc -l <"$work/moderation.log") - before))
    printf '| %s | %s | %s | %s | %s |\n' "$call" "$plain" "$hooked" "$(ratio "$hooked" "$plain")" "$asked"
done
