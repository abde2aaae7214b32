//! Tollgate's benchmark harness: the fixed payloads shared by the upstream fake and the load scenarios.
//!
//! The binaries are `bench-upstream` (an OpenAI-shaped fake), `bench-forwarder` (the minimal hyper hop) and
//! `tollgate-bench` (snapshot generator and the scenario runner behind `bash bench/run.sh`).

pub mod payload;
