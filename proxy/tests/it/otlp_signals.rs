//! The GenAI metrics and the access log's records into a real OpenTelemetry Collector
//! (`support::collector`): the metrics' names, units, attributes, bounds and summed values after a
//! number of calls; one log record per call with the access line's fields and the call's trace; a
//! dead collector that fails and slows no call, its losses counted, the export resumed after it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use tollgate_proxy::{
    LogsConfig, MetricsConfig, OtlpProtocol, OtlpTarget, ProxyConfig, Sampler, TraceConfig,
};
use tollgate_snapshot::ProviderType;

use crate::support::chat_route::{
    CHAT, CLIENT_KEY, FALLBACK_KEY, PRIMARY_KEY, failing_primary_and_fallback, table, typed,
};
use crate::support::collector::{Collector, attr};
use crate::support::openai_fake::{Behaviour, OpenAiFake};
use crate::support::{Reply, TestProxy, send, test_config};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The conventions' bounds (open-telemetry/semantic-conventions-genai `gen-ai-metrics.md`).
const TOKEN_BOUNDS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const DURATION_BOUNDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TTFT_BOUNDS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn target(endpoint: String, protocol: OtlpProtocol) -> OtlpTarget {
    OtlpTarget {
        endpoint: Some(endpoint),
        protocol,
        service_name: "tollgate-test".into(),
        resource: vec![("deployment.environment".into(), "test".into())],
        timeout: Duration::from_secs(2),
        ..OtlpTarget::default()
    }
}

/// Metrics every 100 ms and logs, to `endpoint`.
fn with_signals(mut config: ProxyConfig, endpoint: String, protocol: OtlpProtocol) -> ProxyConfig {
    config.metrics = Some(MetricsConfig {
        target: target(endpoint.clone(), protocol),
        interval: Duration::from_millis(100),
        ..MetricsConfig::default()
    });
    config.logs = Some(LogsConfig {
        target: target(endpoint, protocol),
        delay: Duration::from_millis(20),
        ..LogsConfig::default()
    });
    config
}

async fn chat(proxy: &TestProxy, stream: bool, traceparent: Option<&str>) -> Reply {
    let auth = format!("Bearer {CLIENT_KEY}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(tp) = traceparent {
        headers.push(("traceparent", tp));
    }
    send(
        Method::POST,
        &proxy.url(CHAT),
        &headers,
        Some(&json!({
            "model": "front-model",
            "messages": [{"role": "user", "content": "hello"}],
            "stream": stream
        })),
    )
    .await
}

/// An OTLP/JSON attribute list as a map of plain values.
fn attributes(item: &Value) -> BTreeMap<String, Value> {
    item["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let key = kv["key"].as_str()?;
            Some((key.to_string(), attr(item, key)?))
        })
        .collect()
}

fn number(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The latest point of each attribute set of metric `name` (the sums are cumulative).
fn latest(collector: &Collector, name: &str) -> Vec<Value> {
    let mut by_set: BTreeMap<String, Value> = BTreeMap::new();
    for p in collector.metric_points(name) {
        by_set.insert(serde_json::to_string(&attributes(&p)).unwrap(), p);
    }
    by_set.into_values().collect()
}

/// Waits (up to 15 s) until the duration metric has counted `calls` calls; returns the points of
/// the three metrics.
async fn metrics_after(collector: &Collector, calls: u64) -> [Vec<Value>; 3] {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let counted: f64 = latest(collector, "gen_ai.server.request.duration")
            .iter()
            .map(|p| number(&p["count"]))
            .sum();
        if counted as u64 >= calls {
            return [
                latest(collector, "gen_ai.client.token.usage"),
                latest(collector, "gen_ai.server.request.duration"),
                latest(collector, "gen_ai.server.time_to_first_token"),
            ];
        }
        assert!(
            Instant::now() < deadline,
            "{counted} of {calls} calls counted by the collector's metrics"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bounds(p: &Value) -> Vec<f64> {
    p["explicitBounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(number)
        .collect()
}

fn common(extra: &[(&str, &str)]) -> BTreeMap<String, Value> {
    [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "front-model"),
        ("gen_ai.response.model", "gpt-up"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), json!(v)))
    .collect()
}

#[tokio::test]
async fn the_genai_metrics_reach_the_collector_with_their_attributes_and_summed_values() {
    let collector = Collector::start();
    let (primary, _fallback, both) = failing_primary_and_fallback().await;
    let config = with_signals(
        test_config(),
        collector.http_endpoint(),
        OtlpProtocol::HttpProtobuf,
    );
    let proxy = TestProxy::start_with(config, Some(both)).await;
    let mut answered = Vec::new();
    for stream in [false, false, false, true, true] {
        let reply = chat(&proxy, stream, None).await;
        reply.assert_status(200);
        answered.push(proxy.log_line_of(&reply.request_id()).await);
    }
    // The primary alone: the call fails.
    proxy.swap(
        table(
            vec![typed(
                ProviderType::OpenAI,
                &primary.endpoint(),
                PRIMARY_KEY,
                "gpt-up",
            )],
            "gpt-up",
        ),
        2,
    );
    let failed = chat(&proxy, false, None).await;
    assert!(failed.status.is_server_error(), "{}", failed.status);
    let failed = proxy.log_line_of(&failed.request_id()).await;
    let error_class = failed["error_class"].as_str().unwrap().to_string();

    let [tokens, durations, ttft] = metrics_after(&collector, 6).await;
    let sum = |key: &str| {
        answered
            .iter()
            .map(|l| l[key].as_f64().unwrap())
            .sum::<f64>()
    };
    assert!(sum("tokens_in") > 0.0 && sum("tokens_out") > 0.0);

    // gen_ai.client.token.usage: the answered calls' tokens, by type.
    assert_eq!(tokens.len(), 2, "{tokens:#?}");
    for p in &tokens {
        assert_eq!(p["unit"], "{token}");
        assert_eq!(p["aggregationTemporality"], 2, "cumulative");
        assert_eq!(bounds(p), TOKEN_BOUNDS);
        assert_eq!(number(&p["count"]), 5.0);
        let kind = attr(p, "gen_ai.token.type").unwrap();
        assert_eq!(
            attributes(p),
            common(&[("gen_ai.token.type", kind.as_str().unwrap())])
        );
        let want = if kind == "input" {
            sum("tokens_in")
        } else {
            sum("tokens_out")
        };
        assert_eq!(number(&p["sum"]), want, "{kind} tokens");
        let buckets: f64 = p["bucketCounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(number)
            .sum();
        assert_eq!(buckets, 5.0);
        assert_eq!(
            attr(&p["resource"], "service.name"),
            Some(json!("tollgate-test"))
        );
        assert_eq!(
            attr(&p["resource"], "deployment.environment"),
            Some(json!("test"))
        );
    }

    // gen_ai.server.request.duration: every call, the failed one under its error.type.
    assert_eq!(durations.len(), 2, "{durations:#?}");
    let ok = durations
        .iter()
        .find(|p| attr(p, "error.type").is_none())
        .unwrap();
    assert_eq!(attributes(ok), common(&[]));
    assert_eq!(number(&ok["count"]), 5.0);
    let latency_s = sum("latency_ms") / 1000.0;
    assert!(
        (number(&ok["sum"]) - latency_s).abs() < 0.005 + latency_s * 0.05,
        "duration sum {} vs the access log's {latency_s}",
        number(&ok["sum"])
    );
    let bad = durations
        .iter()
        .find(|p| attr(p, "error.type").is_some())
        .unwrap();
    assert_eq!(attributes(bad), common(&[("error.type", &error_class)]));
    assert_eq!(number(&bad["count"]), 1.0);
    for p in &durations {
        assert_eq!(p["unit"], "s");
        assert_eq!(bounds(p), DURATION_BOUNDS);
    }

    // gen_ai.server.time_to_first_token: the two streams.
    assert_eq!(ttft.len(), 1, "{ttft:#?}");
    assert_eq!(ttft[0]["unit"], "s");
    assert_eq!(bounds(&ttft[0]), TTFT_BOUNDS);
    assert_eq!(attributes(&ttft[0]), common(&[]));
    assert_eq!(number(&ttft[0]["count"]), 2.0);
    let ttft_s: f64 = answered
        .iter()
        .filter_map(|l| l["ttft_ms"].as_f64())
        .sum::<f64>()
        / 1000.0;
    assert!((number(&ttft[0]["sum"]) - ttft_s).abs() < 0.002, "{ttft_s}");

    // Nothing secret in what was exported.
    let raw = collector.raw();
    assert!(!raw.contains(PRIMARY_KEY) && !raw.contains(FALLBACK_KEY) && !raw.contains(CLIENT_KEY));
    proxy.stop().await;
}

/// The access line as the record's attributes must carry it: `time` and the `null`s left out.
fn expected(line: &Value) -> BTreeMap<String, Value> {
    line.as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| *k != "time" && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn assert_same_fields(record: &Value, line: &Value) {
    let got = attributes(record);
    let want = expected(line);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, w) in &want {
        let g = &got[k];
        if w.is_f64() {
            // The JSON line rounds milliseconds to three decimals.
            assert!((number(g) - number(w)).abs() < 1e-3, "{k}: {g} vs {w}");
        } else {
            assert_eq!(g, w, "{k}");
        }
    }
}

/// Waits (up to 15 s) for the record of a request id.
async fn record_of(collector: &Collector, request_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(r) = collector
            .log_records()
            .into_iter()
            .find(|r| attr(r, "request_id") == Some(json!(request_id)))
        {
            return r;
        }
        assert!(Instant::now() < deadline, "no log record of {request_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_call_is_a_log_record_with_the_access_line_s_fields_and_its_span() {
    let collector = Collector::start();
    let (_primary, _fallback, both) = failing_primary_and_fallback().await;
    let mut config = with_signals(
        test_config(),
        collector.http_endpoint(),
        OtlpProtocol::HttpProtobuf,
    );
    config.traces = Some(TraceConfig {
        endpoint: Some(collector.http_endpoint()),
        protocol: OtlpProtocol::HttpProtobuf,
        sampler: Sampler::default(),
        delay: Duration::from_millis(20),
        ..TraceConfig::default()
    });
    let proxy = TestProxy::start_with(config, Some(both)).await;
    let reply = chat(
        &proxy,
        true,
        Some(&format!("00-{TRACE_ID}-{CALLER_SPAN}-01")),
    )
    .await;
    reply.assert_status(200);
    let line = proxy.log_line_of(&reply.request_id()).await;
    let record = record_of(&collector, &reply.request_id()).await;
    assert_same_fields(&record, &line);
    assert_eq!(record["eventName"], "tollgate.access");
    assert_eq!(record["severityNumber"], 9);
    assert_eq!(
        record["body"]["stringValue"],
        format!("POST {CHAT} 200").as_str()
    );
    assert_eq!(
        attr(&record["resource"], "service.name"),
        Some(json!("tollgate-test"))
    );
    // The record belongs to the call's server span.
    assert_eq!(record["traceId"], TRACE_ID);
    let spans = collector.spans_of(TRACE_ID, 3).await;
    let server = spans
        .iter()
        .find(|s| s["kind"] == 2)
        .expect("a server span");
    assert_eq!(record["spanId"], server["spanId"]);

    // N calls, N records: one each.
    for _ in 0..4 {
        chat(&proxy, false, None).await.assert_status(200);
    }
    let lines = proxy.log_lines();
    assert_eq!(lines.len(), 5);
    for line in &lines {
        let id = line["request_id"].as_str().unwrap();
        let record = record_of(&collector, id).await;
        assert_same_fields(&record, line);
    }
    let count = |id: &str| {
        collector
            .log_records()
            .iter()
            .filter(|r| attr(r, "request_id") == Some(json!(id)))
            .count()
    };
    for line in &lines {
        assert_eq!(count(line["request_id"].as_str().unwrap()), 1);
    }
    assert!(
        !collector.raw().contains("hello"),
        "no content in the records"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn over_grpc_metrics_and_untraced_log_records_reach_the_collector() {
    let collector = Collector::start();
    let (_primary, _fallback, both) = failing_primary_and_fallback().await;
    let config = with_signals(test_config(), collector.grpc_endpoint(), OtlpProtocol::Grpc);
    let proxy = TestProxy::start_with(config, Some(both)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = chat(&proxy, false, None).await;
        reply.assert_status(200);
        ids.push(reply.request_id());
    }
    let [tokens, durations, _] = metrics_after(&collector, 3).await;
    assert_eq!(tokens.len(), 2);
    assert_eq!(number(&durations[0]["count"]), 3.0);
    assert_eq!(attributes(&durations[0]), common(&[]));
    for id in &ids {
        let record = record_of(&collector, id).await;
        assert_same_fields(&record, &proxy.log_line_of(id).await);
        // No traces configured: the record belongs to no span.
        assert!(record.get("traceId").is_none_or(|t| t == ""), "{record:#}");
    }
    proxy.stop().await;
}

/// Metrics and log records over gRPC to a collector that speaks only TLS, its certificate trusted
/// through the configured CA.
#[tokio::test]
async fn over_grpc_with_tls_metrics_and_log_records_reach_a_collector_trusted_by_its_ca() {
    let (collector, ca) = Collector::start_tls();
    let (_primary, _fallback, both) = failing_primary_and_fallback().await;
    let mut config = with_signals(
        test_config(),
        collector.grpcs_endpoint(),
        OtlpProtocol::Grpc,
    );
    for target in [
        &mut config.metrics.as_mut().unwrap().target,
        &mut config.logs.as_mut().unwrap().target,
    ] {
        target.ca_pem = Some(ca.clone());
    }
    let proxy = TestProxy::start_with(config, Some(both)).await;
    let reply = chat(&proxy, false, None).await;
    reply.assert_status(200);
    let [_, durations, _] = metrics_after(&collector, 1).await;
    assert_eq!(number(&durations[0]["count"]), 1.0);
    let id = reply.request_id();
    assert_same_fields(
        &record_of(&collector, &id).await,
        &proxy.log_line_of(&id).await,
    );
    proxy.stop().await;
}

/// Reads one sample of a Prometheus text exposition.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn timed_calls(proxy: &TestProxy, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        chat(proxy, false, None).await.assert_status(200);
        took.push(t.elapsed());
    }
    took.sort();
    took
}

#[tokio::test]
async fn a_dead_collector_fails_and_slows_no_call_its_records_are_counted_and_export_resumes() {
    let mut collector = Collector::start();
    let upstream = OpenAiFake::start(Behaviour::new("only", FALLBACK_KEY)).await;
    let content = table(
        vec![typed(
            ProviderType::OpenAI,
            &upstream.endpoint(),
            FALLBACK_KEY,
            "gpt-up",
        )],
        "gpt-up",
    );
    let mut config = with_signals(
        test_config(),
        collector.http_endpoint(),
        OtlpProtocol::HttpProtobuf,
    );
    for target in [
        &mut config.metrics.as_mut().unwrap().target,
        &mut config.logs.as_mut().unwrap().target,
    ] {
        target.timeout = Duration::from_millis(500);
    }
    config.logs.as_mut().unwrap().queue_records = 8;
    let proxy = TestProxy::start_with(config, Some(content)).await;
    let scrape = || async {
        let r = send(Method::GET, &proxy.admin_url("/metrics"), &[], None).await;
        String::from_utf8_lossy(&r.body).into_owned()
    };

    let alive = timed_calls(&proxy, 60).await;
    collector.kill();
    let dead = timed_calls(&proxy, 60).await;
    let median = |d: &[Duration]| d[d.len() / 2];
    eprintln!(
        "median call with the collector up {:?}, down {:?}; slowest {:?} / {:?}",
        median(&alive),
        median(&dead),
        alive.last().unwrap(),
        dead.last().unwrap()
    );
    assert!(
        median(&dead) <= median(&alive) * 2 + Duration::from_millis(10),
        "calls slowed while the collector was down: {:?} vs {:?}",
        median(&dead),
        median(&alive)
    );

    // The records of the calls made while it was down were dropped, and counted; so were the
    // metrics' exports that failed.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (dropped, failed) = loop {
        let text = scrape().await;
        let dropped = metric(
            &text,
            "tollgate_otlp_log_records_dropped_total{reason=\"export_failed\"}",
        ) + metric(
            &text,
            "tollgate_otlp_log_records_dropped_total{reason=\"queue_full\"}",
        );
        let failed = metric(
            &text,
            "tollgate_otlp_metric_exports_total{outcome=\"failed\"}",
        );
        if (dropped >= 60.0 && failed >= 1.0) || Instant::now() > deadline {
            break (dropped, failed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("records dropped {dropped}, metric exports failed {failed}");
    assert!(dropped >= 60.0, "dropped records counted: {dropped}");
    assert!(failed >= 1.0, "failed metric exports counted: {failed}");

    // Back on the same port: the next calls' records get there, and the metrics' sums (cumulative)
    // include the calls made while it was down.
    collector.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = chat(&proxy, false, None).await;
        reply.assert_status(200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = reply.request_id();
        if collector
            .log_records()
            .iter()
            .any(|r| attr(r, "request_id") == Some(json!(id)))
        {
            break;
        }
        assert!(Instant::now() < deadline, "log export did not resume");
    }
    metrics_after(&collector, 121).await;
    let text = scrape().await;
    assert!(
        metric(&text, "tollgate_otlp_log_records_exported_total") >= 1.0,
        "{text}"
    );
    proxy.stop().await;
}
