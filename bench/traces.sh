#!/usr/bin/env bash
# What OTLP telemetry costs a chat call: user-space instructions per call (callgrind) of the proxy with
# telemetry off; traces configured but not sampled (OTEL_TRACES_SAMPLER=always_off); every call sampled
# and exported; the GenAI metrics on (OTEL_METRICS_EXPORTER=otlp, exported every second); the access
# log as OTLP records (OTEL_LOGS_EXPORTER=otlp); and metrics and logs with every call sampled — all
# over OTLP/HTTP to a real OpenTelemetry Collector on loopback (tests/collector/ensure.sh builds it),
# in the same run against the same upstream.
#
#   bash bench/traces.sh         # 3,000 calls each after 300 to warm up
#   bash bench/traces.sh 5000    # another count
#   proxy_bin=/tmp/old-proxy bash bench/traces.sh   # another build of the proxy (a before/after pair)
#
# The collector runs outside valgrind: only the proxy's own work is counted, the exporter task's
# batching, encoding and sending included. Needs valgrind and oha, as bench/instructions.sh does.
set -euo pipefail
say_as=traces
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

oha="$(command -v oha || echo "$cache/cargo-bin/bin/oha")"
[ -x "$oha" ] || { say "no oha: run bash bench/run.sh --quick once first"; exit 1; }
calls="${1:-3000}"
upstream_port=18190
proxy_port=18195
admin_port=18196
otlp_http_port=18197
otlp_grpc_port=18198
# shellcheck source=bench/callgrind_setup.sh
source bench/callgrind_setup.sh

otelcol="$(bash tests/collector/ensure.sh)"
cat >"$work/otelcol.yaml" <<YAML
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$otlp_grpc_port
      http:
        endpoint: 127.0.0.1:$otlp_http_port
exporters:
  file:
    path: $work/spans.jsonl
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
    metrics:
      receivers: [otlp]
      exporters: [file]
    logs:
      receivers: [otlp]
      exporters: [file]
YAML
"$otelcol" --config "$work/otelcol.yaml" >"$work/otelcol.log" 2>&1 &
pids+=($!)
wait_port "$otlp_http_port" || { say "the collector did not start"; exit 1; }

# A sample of the proxy's Prometheus text, 0 when absent.
metric() { curl -s "http://127.0.0.1:$admin_port/metrics" | awk -v s="$1" 'index($0, s) == 1 { print $2; f = 1 } END { if (!f) print 0 }'; }

# Prints instructions per call with OTLP telemetry in `mode` (off, unsampled, sampled, metrics, logs,
# all).
count() {
    local mode="$1" out="$work/callgrind.out"
    local otel=(env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT -u OTEL_TRACES_SAMPLER
        -u OTEL_EXPORTER_OTLP_METRICS_ENDPOINT -u OTEL_EXPORTER_OTLP_LOGS_ENDPOINT
        OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none OTEL_METRIC_EXPORT_INTERVAL=1000)
    local collector=OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otlp_http_port"
    case "$mode" in
        unsampled) otel+=("$collector" OTEL_TRACES_SAMPLER=always_off) ;;
        sampled) otel+=("$collector" OTEL_TRACES_SAMPLER=always_on) ;;
        metrics) otel+=("$collector" OTEL_TRACES_SAMPLER=always_off OTEL_METRICS_EXPORTER=otlp) ;;
        logs) otel+=("$collector" OTEL_TRACES_SAMPLER=always_off OTEL_LOGS_EXPORTER=otlp) ;;
        all) otel+=("$collector" OTEL_TRACES_SAMPLER=always_on OTEL_METRICS_EXPORTER=otlp OTEL_LOGS_EXPORTER=otlp) ;;
    esac
    rm -f "$out"*
    "${otel[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" "${proxy_bin:-$target/release/tollgate-proxy}" \
        standalone "$work/snapshot.yaml" --poll-interval 1h --listen "127.0.0.1:$proxy_port" \
        --admin-listen "127.0.0.1:$admin_port" >/dev/null 2>&1 &
    local vg=$!
    wait_port "$proxy_port" || { say "the proxy did not start"; kill "$vg"; return 1; }
    local url="http://127.0.0.1:$proxy_port$prefix/v1/chat/completions"
    local load=("$oha" --no-tui -m POST -H "authorization: Bearer $key" -H "content-type: application/json"
        -D "$work/chat.json" -c 8)
    "${load[@]}" -n 300 "$url" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    "${load[@]}" -n "$calls" "$url" >"$work/oha.txt"
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 2
    local exported dropped_queue dropped_export records records_dropped metric_exports
    exported="$(metric tollgate_trace_spans_exported_total)"
    dropped_queue="$(metric 'tollgate_trace_spans_dropped_total{reason="queue_full"}')"
    dropped_export="$(metric 'tollgate_trace_spans_dropped_total{reason="export_failed"}')"
    records="$(metric tollgate_otlp_log_records_exported_total)"
    records_dropped="$(metric 'tollgate_otlp_log_records_dropped_total{reason="queue_full"}')"
    metric_exports="$(metric 'tollgate_otlp_metric_exports_total{outcome="ok"}')"
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    grep -q "\[200\] $calls " "$work/oha.txt" || { say "$mode: not every call answered 200"; return 1; }
    say "$mode: spans exported $exported, dropped (queue full) $dropped_queue, dropped (export failed) $dropped_export;" \
        "log records exported $records, dropped (queue full) $records_dropped; metric exports $metric_exports"
    local total
    total="$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')"
    echo $((total / calls))
}

off="$(count off)"
unsampled="$(count unsampled)"
sampled="$(count sampled)"
metrics="$(count metrics)"
logs="$(count logs)"
all="$(count all)"
printf '| OTLP telemetry | instructions per chat call | ÷ off |\n|---|---|---|\n'
for row in "off $off" "traces configured, not sampled $unsampled" "every call sampled and exported $sampled" \
    "GenAI metrics (traces not sampled) $metrics" "access log as OTLP records (traces not sampled) $logs" \
    "traces sampled, metrics and logs $all"; do
    n="${row##* }"
    printf '| %s | %s | %s |\n' "${row% *}" "$n" "$(awk -v a="$n" -v b="$off" 'BEGIN { printf "%.3f", a / b }')"
done
