//! Client spans of REST passthrough calls, against the real OpenTelemetry Collector: one per request
//! to the service, beneath the call's server span, with the HTTP conventions' attributes (the path,
//! never the query), named upstream as the `traceparent` parent; nothing secret exported.
//! (Upstream MCP tool calls: `traces::a_federated_tool_call_passes_the_trace_to_the_upstream_server`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request};
use serde_json::{Value, json};
use tollgate_proxy::{OtlpProtocol, Sampler, TraceConfig};
use tollgate_snapshot::{
    Content, Credential, Phase, RestCredential, RestOperation, RestService, Timeouts,
};

use crate::support::collector::{Collector, attr};
use crate::support::fake_server::{self, Seen};
use crate::support::*;

const KEY: &str = "tg-trace-rest-key-0042";
const SERVICE_TOKEN: &str = "svc-trace-token-9876";
const QUERY_SECRET: &str = "QSECRET-5511";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A service recording what it is sent: 401 on `/v2/denied`, else 200 with a small JSON body.
async fn start_service() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let addr = fake_server::serve(move |req: Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            let seen = Seen::read(req).await;
            let denied = seen.path == "/v2/denied";
            record.lock().unwrap().push(seen);
            if denied {
                fake_server::json_response(401, &json!({"error": "no"}))
            } else {
                fake_server::json_response(200, &json!({"items": []}))
            }
        }
    })
    .await;
    (format!("http://{addr}/v2"), seen)
}

/// A traced proxy whose route `/orders` passes `GET /items/{id}` and `GET /denied` to `base_url`.
async fn traced_proxy(collector: &Collector, base_url: &str) -> TestProxy {
    let op = |path: &str, id: &str| RestOperation {
        method: "GET".into(),
        path: path.into(),
        operation_id: Some(id.into()),
        spec: json!({}),
    };
    let mut r = route(NS, "orders", "/orders", vec![]);
    r.rest = Some(RestService {
        base_url: base_url.into(),
        timeouts: Timeouts {
            first_byte_ms: 2_000,
            ..Timeouts::default()
        },
        ca_pem: None,
        credential: Some(RestCredential {
            header: "authorization".into(),
            value: Credential(format!("Bearer {SERVICE_TOKEN}")),
        }),
        max_request_bytes: 1024,
        operations: vec![op("/items/{id}", "getItem"), op("/denied", "denied")],
        components: None,
    });
    let content = Content {
        providers: vec![],
        routes: vec![r],
        consumers: vec![consumer(NS, "app", KEY)],
        subscriptions: vec![subscription("app-orders", 0, 0, Phase::Approved)],
        proxy_replicas: 0,
    };
    let mut config = test_config();
    config.traces = Some(TraceConfig {
        endpoint: Some(collector.http_endpoint()),
        protocol: OtlpProtocol::HttpProtobuf,
        service_name: "tollgate-test".into(),
        sampler: Sampler::default(),
        delay: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        ..TraceConfig::default()
    });
    TestProxy::start_with(config, Some(content)).await
}

/// `GET /orders/api{path}` in the trace `trace_id`; the server and client spans exported.
async fn get(
    collector: &Collector,
    proxy: &TestProxy,
    path: &str,
    trace_id: &str,
) -> (Reply, Value, Value) {
    let auth = format!("Bearer {KEY}");
    let traceparent = format!("00-{trace_id}-{CALLER_SPAN}-01");
    let reply = send(
        Method::GET,
        &proxy.url(&format!("/orders/api{path}")),
        &[("authorization", &auth), ("traceparent", &traceparent)],
        None,
    )
    .await;
    let spans = collector.spans_of(trace_id, 2).await;
    let of = |kind: i64| {
        spans
            .iter()
            .find(|s| s["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no span of kind {kind}: {spans:#?}"))
    };
    (reply, of(2), of(3))
}

#[tokio::test]
async fn a_rest_call_is_a_client_span_under_the_server_span_named_upstream_without_its_query() {
    let collector = Collector::start();
    let (base, seen) = start_service().await;
    let proxy = traced_proxy(&collector, &base).await;
    let port = i64::from(
        base.rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches("/v2")
            .parse::<u16>()
            .unwrap(),
    );

    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let (reply, server, client) = get(
        &collector,
        &proxy,
        &format!("/items/42?token={QUERY_SECRET}"),
        trace_id,
    )
    .await;
    reply.assert_status(200);
    assert_eq!(server["parentSpanId"], CALLER_SPAN);
    assert_eq!(client["parentSpanId"], server["spanId"]);
    assert_eq!(client["name"], "GET");
    assert_eq!(attr(&client, "http.request.method"), Some(json!("GET")));
    assert_eq!(attr(&client, "server.address"), Some(json!("127.0.0.1")));
    assert_eq!(attr(&client, "server.port"), Some(json!(port)));
    assert_eq!(attr(&client, "url.path"), Some(json!("/v2/items/42")));
    assert_eq!(attr(&client, "http.response.status_code"), Some(json!(200)));
    assert_eq!(attr(&client, "error.type"), None);
    // The service saw the client span as its parent, in the caller's trace; the query went on.
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(
        got.headers["traceparent"],
        format!("00-{trace_id}-{}-01", client["spanId"].as_str().unwrap())
    );
    assert_eq!(got.query, format!("token={QUERY_SECRET}"));

    // A service that refuses the gateway's credential: the caller gets 502, the span the 401.
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    let (reply, _, client) = get(&collector, &proxy, "/denied", trace_id).await;
    reply.assert_status(502);
    assert_eq!(attr(&client, "http.response.status_code"), Some(json!(401)));
    assert_eq!(attr(&client, "error.type"), Some(json!("401")));
    assert_eq!(client["status"]["code"], 2, "an error status: {client:#}");

    let raw = collector.raw();
    for secret in [QUERY_SECRET, KEY, SERVICE_TOKEN] {
        assert!(!raw.contains(secret), "{secret:?} reached the collector");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_unreachable_service_is_a_failed_client_span() {
    let collector = Collector::start();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("http://{}/v2", closed.local_addr().unwrap());
    drop(closed);
    let proxy = traced_proxy(&collector, &down).await;
    let (reply, server, client) = get(
        &collector,
        &proxy,
        "/items/1",
        "5bf92f3577b34da6a3ce929d0e0e4738",
    )
    .await;
    reply.assert_status(502);
    assert_eq!(client["parentSpanId"], server["spanId"]);
    assert_eq!(
        attr(&client, "error.type"),
        Some(json!("upstream_unreachable"))
    );
    assert_eq!(attr(&client, "http.response.status_code"), None);
    assert_eq!(client["status"]["code"], 2);
    proxy.stop().await;
}
