//! The proxy's integration tests, one binary. Each top-level module is named for the behaviour it
//! proves, seen from outside the proxy:
//!
//! - `listeners`: connections: HTTP/1.1, h2c, TLS with ALPN, header and idle limits, graceful drain.
//! - `admission`: who may call what: keys, subscriptions, route lifecycle, model lists, body limits,
//!   readiness.
//! - `limits`: request, token and budget limits, in one process (`local`) and shared through a real
//!   Redis by two proxy processes (`redis`).
//! - `backends`: the choice of backend: weights, ordered fallbacks, ejection and probes, the retry
//!   budget, key pools.
//! - `upstream`: the call to an OpenAI-compatible upstream: credentials, the body, streaming relay,
//!   disconnects, deadlines.
//! - `translation`: OpenAI-format callers served by providers with other APIs, one module a
//!   provider, and how promptly translated streams flow.
//! - `messages_api`: Anthropic-format callers, passed through or translated to every provider type.
//! - `prompts`: prompt APIs (rendering, answers, their 400s, fallbacks, limits) and the route's
//!   OpenAPI document.
//! - `cache`: the response cache: hits, scopes, `Cache-Control`, stream replay, expiry, and entries
//!   shared through a real Redis by two proxies (`cache::redis`).
//! - `rest`: REST passthrough to a route's REST service: declared operations only, credentials,
//!   limits, large answers, failures.
//! - `mcp`: the MCP endpoint: the route's APIs as tools with the official Python SDK of both lines,
//!   JSON-RPC errors of both protocol eras, sessions continued across replicas.
//! - `responses_api`: Responses-API callers, passed through to OpenAI or translated for the others.
//! - `traces`: OTLP traces into a real OpenTelemetry Collector: the span tree, GenAI attributes,
//!   W3C trace context in and out, and a collector that dies mid-run.
//! - `guardrails`: content rules on requests and answers: masking, refusals, streamed answers.
//! - `hot_swap`: snapshot swaps under load.
//! - `snapshot_order`: a proxy following a controller never goes back to an older snapshot.
//! - `standalone`: configuration read from YAML files and watched.
//! - `sdk`: the official Python SDKs as clients.
//! - `layers`: the source itself: the layer rule of `proxy/README.md` and no import circles.
//!
//! `support` holds what they share: an in-process proxy, snapshot builders, an HTTP client, the
//! upstream fakes on one fake-server core, the real binary as a process, and the SDK runner.

mod support;

mod admission;
mod backends;
mod cache;
mod guardrails;
mod hostile;
mod hot_swap;
mod layers;
mod limits;
mod listeners;
mod mcp;
mod mcp_federation;
mod mcp_guardrails;
mod messages_api;
mod moderation;
mod otlp_signals;
mod prompts;
mod responses_api;
mod rest;
mod sdk;
mod snapshot_order;
mod standalone;
mod standalone_keys;
mod trace_clients;
mod trace_content;
mod traces;
mod translation;
mod upstream;
