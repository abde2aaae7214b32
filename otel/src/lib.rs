//! What `tollgate-proxy` and `tollgate-controller` read alike from their OpenTelemetry flags and the
//! standard `OTEL_*` variables: the `key=value` lists of headers and resource attributes (`pairs`)
//! and the samplers of `OTEL_TRACES_SAMPLER` (`sampler`). Pure: no I/O, no async runtime, no
//! OpenTelemetry SDK, so each binary keeps its own exporter and this stays cheap to test.

mod pairs;
mod sampler;

pub use pairs::parse_pairs;
pub use sampler::{Root, Sampler, UnknownSampler};
