//! Traces over OTLP: W3C trace context in and out (`context`), a sampled call's spans (`span`) and
//! the answer's attributes (`response`), the batches waiting for export (`batch`) and the exporter
//! task (`export`). The sampler and the `key=value` lists of the `OTEL_*` variables are
//! `tollgate_otel`'s, shared with the controller.

mod batch;
mod context;
#[cfg(test)]
mod encode_tests;
mod export;
pub(super) mod otlp;
mod response;
mod span;

pub use context::{TRACEPARENT, TRACESTATE, TraceParent, tracestate_ok};
pub use export::{Begun, Protocol, TraceConfig, Tracer};
pub use span::{CallSummary, CallTrace, ClientSpan, Content, McpClient, McpSpan, provider_name};
pub use tollgate_otel::{Sampler, UnknownSampler, parse_pairs};
