#!/usr/bin/env bash
# What guardrails cost: user-space instructions per call (callgrind) of the benchmark route with an
# AIGuardrail of PII rules (every built-in detector, Mask, on the request and on the answer) next to
# the same route without it, for a whole chat call and a streamed one; then the delay streamed text
# gets, with and without the guardrail, from a slow upstream on loopback (bench/stream_delay.py). All
# in the same run, against the same upstreams.
#
#   bash bench/guardrails.sh          # 1,500 calls per path after 300 to warm up
#   bash bench/guardrails.sh 3000     # another count
#   GUARDRAILS_BEFORE=/path/to/an/older/tollgate-proxy bash bench/guardrails.sh 1000
#                                     # also counts that binary with the guardrail, in the same run
#
# Three texts: the prose the other benches send (no digits: the digit-led detectors have nothing to
# look at); mixed, the same kind of words with now and then a date or an e-mail address, as chat text
# has (`--text mixed`); and a digit-rich one (`tollgate-bench body --text digits`, answered by
# `bench-upstream --text digits`): dates, amounts, versions, card-like and IBAN-like numbers with wrong
# checksums, phone-like groups and a few real values, so the figure is not flattered.
# GUARDRAILS_TEXTS="prose mixed" picks some of them.
#
# Needs valgrind and oha, as bench/instructions.sh does. Not part of the test suite.
set -euo pipefail
say_as=guardrails
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

oha="$(command -v oha || echo "$cache/cargo-bin/bin/oha")"
[ -x "$oha" ] || { say "no oha: run bash bench/run.sh --quick once first"; exit 1; }
calls="${1:-1500}"
upstream_port=18200
proxy_port=18205
admin_port=18206
slow_upstream_port=18207
digits_upstream_port=18208
mixed_upstream_port=18209
before="${GUARDRAILS_BEFORE:-}"
# shellcheck source=bench/callgrind_setup.sh
source bench/callgrind_setup.sh

# The same snapshot with the PII guardrail on the benchmark route. `$1`: the snapshot, `$2`: the output.
guarded() {
    sed 's/^  stage: Published$/  stage: Published\n  guardrails: [{name: bench-pii}]/' "$1" >"$2"
    cat >>"$2" <<'YAML'
---
apiVersion: tollgate.dev/v1alpha1
kind: AIGuardrail
metadata: {name: bench-pii, namespace: bench-t00}
spec:
  appliesTo: Both
  rules:
    - {name: emails, detector: Email, action: Mask}
    - {name: phones, detector: Phone, action: Mask}
    - {name: cards, detector: CreditCard, action: Mask}
    - {name: ibans, detector: Iban, action: Mask}
    - {name: ssns, detector: UsSsn, action: Mask}
    - {name: ips, detector: IpAddress, action: Mask}
    - {name: secrets, detector: Secret, action: Mask}
YAML
    grep -q 'guardrails: \[{name: bench-pii}\]' "$2" || { say "could not attach the guardrail"; exit 1; }
}
guarded "$work/snapshot.yaml" "$work/guarded.yaml"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
chat = json.load(open(f"{work}/chat.json"))
chat["stream"] = True
open(f"{work}/stream.json", "w").write(json.dumps(chat))
PY
# The digit-rich and the mixed text: the same route against a fake that answers with it.
other_text() {
    local text="$1" port="$2"
    "$target/release/bench-upstream" --listen "127.0.0.1:$port" --text "$text" >/dev/null 2>&1 &
    pids+=($!)
    sed "s/127\.0\.0\.1:$upstream_port/127.0.0.1:$port/" "$work/snapshot.yaml" >"$work/$text.yaml"
    grep -q "127.0.0.1:$port" "$work/$text.yaml" || { say "could not point the route at the $text fake"; exit 1; }
    guarded "$work/$text.yaml" "$work/$text-guarded.yaml"
    "$target/release/tollgate-bench" body --text "$text" >"$work/$text-chat.json"
    "$target/release/tollgate-bench" body --text "$text" --stream >"$work/$text-stream.json"
    wait_port "$port" || { say "the $text fake did not start"; exit 1; }
}
other_text digits "$digits_upstream_port"
other_text mixed "$mixed_upstream_port"

# Prints instructions per call of proxy binary `$1` serving snapshot `$2`, for body `$3`.
count() {
    local proxy="$1" snapshot="$2" body="$3" out="$work/callgrind.out"
    rm -f "$out"*
    valgrind --tool=callgrind --callgrind-out-file="$out" "$proxy" \
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
    [ -n "${GUARDRAILS_KEEP:-}" ] && cp "$out.1" "$GUARDRAILS_KEEP.$(basename "$proxy").$snapshot.$body"
    echo $((total / calls))
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
now="$target/release/tollgate-proxy"
if [ -n "$before" ]; then
    printf '| text | call | without guardrails | with the PII guardrail, before | ratio | with the PII guardrail, now | ratio |\n|---|---|---|---|---|---|---|\n'
else
    printf '| text | call | without guardrails | with the PII guardrail | ratio |\n|---|---|---|---|---|\n'
fi
for text in ${GUARDRAILS_TEXTS:-prose mixed digits}; do
    plain_snapshot=snapshot guarded_snapshot=guarded prefix_body=""
    if [ "$text" != prose ]; then
        plain_snapshot="$text" guarded_snapshot="$text-guarded" prefix_body="$text-"
    fi
    for call in chat stream; do
        body="$prefix_body$call"
        plain="$(count "$now" "$plain_snapshot" "$body")"
        pii="$(count "$now" "$guarded_snapshot" "$body")"
        if [ -n "$before" ]; then
            old="$(count "$before" "$guarded_snapshot" "$body")"
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$text" "$call" "$plain" "$old" \
                "$(ratio "$old" "$plain")" "$pii" "$(ratio "$pii" "$plain")"
        else
            printf '| %s | %s | %s | %s | %s |\n' "$text" "$call" "$plain" "$pii" "$(ratio "$pii" "$plain")"
        fi
    done
done

# The delay of streamed text: the proxy outside valgrind, a slow upstream in the measuring process.
"$target/release/tollgate-bench" snapshot --small --upstream "127.0.0.1:$slow_upstream_port" \
    >"$work/slow.yaml" 2>/dev/null
guarded "$work/slow.yaml" "$work/slow-guarded.yaml"
delay() {
    "$target/release/tollgate-proxy" standalone "$work/$1.yaml" --poll-interval 1h \
        --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" >/dev/null 2>&1 &
    local p=$!
    pids+=("$p")  # killed on exit if the measurement fails
    wait_port "$proxy_port" || { say "the proxy did not start"; kill "$p"; return 1; }
    python3 bench/stream_delay.py --upstream-port "$slow_upstream_port" --proxy-port "$proxy_port" \
        --key "$key" --prefix "$prefix"
    kill "$p"
    wait "$p" 2>/dev/null || true
}
printf '\n| streamed text | delay p50 (ms) | p99 (ms) | max (ms) | most bytes written upstream before a byte arrived | upstream rate (bytes/s) |\n|---|---|---|---|---|---|\n'
for snapshot in slow slow-guarded; do
    delay "$snapshot" >"$work/delay.json"
    python3 -c '
import json, sys
d = json.load(open(sys.argv[2]))
print("| {} | {delay_ms_p50} | {delay_ms_p99} | {delay_ms_max} | {behind_bytes_max} | {upstream_bytes_per_s} |".format(sys.argv[1], **d))
' "$([ "$snapshot" = slow ] && echo "without guardrails" || echo "with the PII guardrail")" "$work/delay.json"
done
