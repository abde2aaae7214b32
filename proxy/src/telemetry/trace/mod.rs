//! Traces over OTLP: W3C trace context in and out (`context`), the sampler (`sampler`), a sampled
//! call's spans (`span`) and the answer's attributes (`response`), the bounded queue and exporter task (`export`), and the `key=value` lists
//! of the `OTEL_*` variables (`pairs`).

mod batch;
mod context;
#[cfg(test)]
mod encode_tests;
mod export;
pub(super) mod otlp;
mod pairs;
mod response;
mod sampler;
mod span;

pub use context::{TRACEPARENT, TRACESTATE, TraceParent, tracestate_ok};
pub use export::{Begun, Protocol, TraceConfig, Tracer};
pub use pairs::parse_pairs;
pub use sampler::{Sampler, UnknownSampler};
pub use span::{CallSummary, CallTrace, ClientSpan, Content, McpClient, McpSpan, provider_name};
