//! The controller's traces over OTLP, off unless a collector is configured: a span per compile of
//! the snapshot, a child span per snapshot pushed to the proxies, and a span per batch of status
//! writes (see `README.md`, "Traces and GenAI telemetry"). The flags and the standard `OTEL_*`
//! variables are read as the proxy reads them (`config`, with `tollgate_otel`); the spans are the
//! OpenTelemetry SDK's, handed to a bounded queue drained by a task of its own (`export`).
//!
//! Attributes carry counts, names of objects, versions and the snapshot's content hash: never a
//! Secret's data, a key or a key digest.

mod config;
mod export;
#[cfg(test)]
pub(crate) mod receiver;

use std::{sync::Arc, time::Duration};

use opentelemetry::{
    Context, KeyValue, Value,
    trace::{Span as _, Status, TraceContextExt, Tracer as _, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    trace::{SdkTracer, SdkTracerProvider},
};
use tokio::sync::{mpsc, oneshot};

pub use config::{OtelArgs, Protocol, TraceConfig};

use crate::metrics::Metrics;

/// The controller's tracer: [`Traces::off`], or exporting to a collector. Cheap to clone.
#[derive(Clone, Default)]
pub struct Traces {
    inner: Option<Arc<Exporting>>,
}

struct Exporting {
    tracer: SdkTracer,
    /// Kept so that spans are processed until the process ends.
    _provider: SdkTracerProvider,
    queue: mpsc::Sender<export::Message>,
}

impl Traces {
    /// No spans at all.
    pub fn off() -> Self {
        Self::default()
    }

    /// Traces to the collector of `config`, from a replica named `identity`; starts the exporter
    /// task (call within the async runtime). Fails on a configuration the exporter cannot use (an
    /// unusable CA file, a URL that is not one).
    pub fn start(
        config: TraceConfig,
        identity: &str,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let resource = Resource::builder_empty()
            .with_attribute(KeyValue::new("service.instance.id", identity.to_string()))
            .with_attributes(
                config
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_service_name(config.service_name.clone())
            .build();
        let wire = export::Wire::new(&config, &resource)?;
        let (queue, receiver) = mpsc::channel(config.queue_spans.max(1));
        let provider = SdkTracerProvider::builder()
            .with_sampler(export::Sampling(config.sampler))
            .with_span_processor(export::QueueProcessor::new(queue.clone(), metrics.clone()))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer_with_scope(
            opentelemetry::InstrumentationScope::builder("tollgate-controller")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        tracing::info!(
            url = %without_userinfo(&config.url),
            protocol = ?config.protocol,
            "traces go to an OTLP collector"
        );
        tokio::spawn(export::run(wire, receiver, config, metrics));
        Ok(Self {
            inner: Some(Arc::new(Exporting {
                tracer,
                _provider: provider,
                queue,
            })),
        })
    }

    /// A span that starts a trace (a no-op when traces are off or the sampler says no).
    pub fn root(&self, name: &'static str) -> Work {
        Work(self.inner.as_ref().and_then(|e| {
            let span = e.tracer.start_with_context(name, &Context::new());
            span.span_context()
                .is_sampled()
                .then(|| Context::new().with_span(span))
        }))
    }

    /// A span beneath `parent` (a no-op when `parent` is one).
    pub fn child(&self, parent: &Work, name: &'static str) -> Work {
        Work(self.inner.as_ref().zip(parent.0.as_ref()).map(|(e, cx)| {
            let span = e.tracer.start_with_context(name, cx);
            Context::new().with_span(span)
        }))
    }

    /// Waits (up to `timeout`) until the spans ended so far have been exported or dropped.
    pub async fn flush(&self, timeout: Duration) {
        let Some(e) = &self.inner else { return };
        let (done, finished) = oneshot::channel();
        let _ = tokio::time::timeout(timeout, async {
            if e.queue.send(export::Message::Flush(done)).await.is_ok() {
                let _ = finished.await;
            }
        })
        .await;
    }
}

/// `url` with any `user:password@` left out, for the log.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// One piece of the controller's work, recorded as a span when sampled; it ends when dropped.
pub struct Work(Option<Context>);

impl Work {
    /// Sets an attribute (does nothing when not recorded).
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the work failed: `error.type` (a short, fixed word) and an error status saying what
    /// went wrong (object names and counts, never Secret data).
    pub fn fail(&self, error_type: &'static str, description: String) {
        if let Some(cx) = &self.0 {
            let span = cx.span();
            span.set_attribute(KeyValue::new("error.type", error_type));
            span.set_status(Status::error(description));
        }
    }

    /// Whether the span is recorded (so that costly attributes are computed only then).
    pub fn recorded(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::Ordering, time::Instant};

    use super::*;

    fn config(url: String, queue_spans: usize) -> TraceConfig {
        TraceConfig {
            url,
            protocol: Protocol::HttpProtobuf,
            headers: vec![("api-key".into(), "not-logged".into())],
            ca_pem: None,
            service_name: "tollgate-controller".into(),
            resource: Vec::new(),
            sampler: tollgate_otel::Sampler::default(),
            queue_spans,
            batch_spans: 8,
            delay: Duration::from_millis(5),
            timeout: Duration::from_millis(300),
        }
    }

    /// Spans dropped so far: for a full queue, and for a failed export.
    fn dropped(metrics: &Metrics) -> (u64, u64) {
        (
            metrics
                .trace_spans_dropped_queue_full
                .load(Ordering::Relaxed),
            metrics
                .trace_spans_dropped_export_failed
                .load(Ordering::Relaxed),
        )
    }

    #[tokio::test]
    async fn a_dead_collector_costs_the_work_nothing_and_every_span_is_counted() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics = Arc::new(Metrics::default());
        let traces = Traces::start(
            config(format!("http://127.0.0.1:{port}/v1/traces"), 16),
            "test",
            metrics.clone(),
        )
        .unwrap();
        let started = Instant::now();
        for i in 0..2_000i64 {
            let work = traces.root("tollgate.compile");
            assert!(work.recorded());
            work.set("tollgate.compile.objects", i);
            let child = traces.child(&work, "tollgate.snapshot.push");
            child.set("tollgate.proxies.connected", 2i64);
        }
        let spent = started.elapsed();
        assert!(spent < Duration::from_secs(1), "4,000 spans took {spent:?}");
        traces.flush(Duration::from_secs(10)).await;
        let (full, failed) = dropped(&metrics);
        assert!(full > 0, "a queue of 16 overflowed");
        assert_eq!(full + failed, 4_000, "{full} + {failed}");
        assert_eq!(metrics.trace_spans_exported.load(Ordering::Relaxed), 0);
        let text = metrics.render();
        assert!(text.contains(&format!(
            "tollgate_controller_trace_spans_dropped_total{{reason=\"queue_full\"}} {full}"
        )));
    }

    #[tokio::test]
    async fn spans_reach_an_otlp_http_receiver_with_their_resource_headers_and_parent() {
        let receiver = receiver::Receiver::start().await;
        let metrics = Arc::new(Metrics::default());
        let mut config = config(receiver.url.clone(), 16);
        config.resource = vec![("deployment.environment.name".into(), "test".into())];
        let traces = Traces::start(config, "replica-1", metrics.clone()).unwrap();
        {
            let compile = traces.root("tollgate.compile");
            compile.set("tollgate.snapshot.routes", 3i64);
            compile.fail("objects_not_accepted", "1 object(s) not accepted".into());
            let push = traces.child(&compile, "tollgate.snapshot.push");
            push.set("tollgate.snapshot.hash", "abc");
        }
        traces.flush(Duration::from_secs(5)).await;
        let spans = receiver.spans();
        assert_eq!(spans.len(), 2, "{spans:?}");
        let compile = spans
            .iter()
            .find(|s| s.span.name == "tollgate.compile")
            .unwrap();
        let push = spans
            .iter()
            .find(|s| s.span.name == "tollgate.snapshot.push")
            .unwrap();
        assert_eq!(push.span.parent_span_id, compile.span.span_id);
        assert_eq!(push.span.trace_id, compile.span.trace_id);
        assert_eq!(
            compile.attr("tollgate.snapshot.routes").as_deref(),
            Some("3")
        );
        assert_eq!(
            compile.attr("error.type").as_deref(),
            Some("objects_not_accepted")
        );
        let status = compile.span.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "1 object(s) not accepted")
        );
        assert_eq!(push.attr("tollgate.snapshot.hash").as_deref(), Some("abc"));
        for (key, value) in [
            ("service.name", "tollgate-controller"),
            ("service.instance.id", "replica-1"),
            ("deployment.environment.name", "test"),
        ] {
            assert!(
                compile.resource.contains(&(key.into(), value.into())),
                "{key}: {:?}",
                compile.resource
            );
        }
        assert!(
            compile
                .headers
                .contains(&("api-key".into(), "not-logged".into()))
        );
        assert!(
            compile
                .headers
                .contains(&("content-type".into(), "application/x-protobuf".into()))
        );
        assert_eq!(compile.target, "/v1/traces");
        assert!(
            compile.headers.contains(&(
                "host".into(),
                receiver.url[7..].trim_end_matches("/v1/traces").into()
            )),
            "{:?}",
            compile.headers
        );
        assert_eq!(metrics.trace_spans_exported.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_collector_that_never_answers_costs_the_work_nothing_either() {
        let receiver = receiver::Receiver::silent().await;
        let metrics = Arc::new(Metrics::default());
        let traces = Traces::start(config(receiver.url.clone(), 16), "t", metrics.clone()).unwrap();
        let started = Instant::now();
        for _ in 0..2_000 {
            traces
                .root("tollgate.compile")
                .set("tollgate.compile.objects", 1i64);
        }
        let spent = started.elapsed();
        assert!(spent < Duration::from_secs(1), "2,000 spans took {spent:?}");
        traces.flush(Duration::from_secs(10)).await;
        let (full, failed) = dropped(&metrics);
        assert!(full > 0 && failed > 0, "{full} + {failed}");
        assert_eq!(full + failed, 2_000);
    }

    #[test]
    fn the_logged_url_has_no_credentials() {
        assert_eq!(
            without_userinfo("https://user:s3cret@collector:4318/v1/traces"),
            "https://collector:4318/v1/traces"
        );
        assert_eq!(
            without_userinfo("http://collector:4318/v1/traces?a=b@c"),
            "http://collector:4318/v1/traces?a=b@c"
        );
        assert_eq!(without_userinfo("http://c:4317"), "http://c:4317");
    }

    #[tokio::test]
    async fn off_and_unsampled_work_records_nothing() {
        let off = Traces::off();
        let work = off.root("tollgate.compile");
        assert!(!work.recorded());
        assert!(!off.child(&work, "tollgate.snapshot.push").recorded());
        off.flush(Duration::from_secs(1)).await;

        let metrics = Arc::new(Metrics::default());
        let mut never = config("http://127.0.0.1:9/v1/traces".into(), 16);
        never.sampler = tollgate_otel::Sampler::from_name("always_off", None).unwrap();
        let traces = Traces::start(never, "test", metrics.clone()).unwrap();
        let work = traces.root("tollgate.compile");
        assert!(!work.recorded());
        assert!(!traces.child(&work, "tollgate.snapshot.push").recorded());
        drop(work);
        traces.flush(Duration::from_secs(5)).await;
        assert_eq!(dropped(&metrics), (0, 0));
    }

    #[test]
    fn a_ca_file_without_a_usable_certificate_stops_the_start() {
        let mut bad = config("https://collector:4318/v1/traces".into(), 16);
        bad.ca_pem = Some("not a certificate".into());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let error = Traces::start(bad.clone(), "t", Arc::new(Metrics::default()))
            .err()
            .expect("refused");
        assert!(error.to_string().contains("no certificate"), "{error}");
        bad.protocol = Protocol::Grpc;
        bad.url = "https://collector:4317".into();
        assert!(Traces::start(bad, "t", Arc::new(Metrics::default())).is_err());
    }
}
