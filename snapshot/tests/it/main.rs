//! The snapshot crate's integration tests, one binary: each module is one behaviour, and `support`
//! builds the resources they compile.

mod determinism;
mod rules_access;
mod rules_guardrails;
mod rules_mcp;
mod rules_moderation;
mod rules_rest;
mod rules_routing;
mod support;
mod telemetry;
mod traffic;
mod verdicts;
mod vertex;
