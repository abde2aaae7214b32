//! OTLP signals besides traces: the GenAI metrics (`genai`: atomic counters per attribute set,
//! capped) and the access log as log records, encoded by hand (`encode`), sent over the traces' two
//! wires (`wire`) by tasks of their own (`export`).

mod encode;
mod export;
mod genai;
mod wire;

pub use encode::SpanIds;
pub use export::{LogExporter, LogsConfig, MetricsConfig, MetricsExporter};
pub use genai::GenAiCall;
pub use wire::{Target, WireError};
