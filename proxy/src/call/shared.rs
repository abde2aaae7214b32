//! What every call shares, for the life of the process.

use std::sync::Arc;

use super::cache::store::ResponseCache;
use crate::control::SnapshotStore;
use crate::limits::Limiter;
use crate::telemetry::Recorder;
use crate::upstream::balance::RetryBudgets;
use crate::upstream::health::Health;

/// Limits applied to every request.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: usize,
    /// Longest pause in a request body (or before it) before the call ends with 408.
    pub body_pause: std::time::Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            body_pause: std::time::Duration::from_secs(60),
        }
    }
}

/// Everything a request handler needs, shared by all connections.
pub struct Shared {
    /// The routing table.
    pub store: Arc<SnapshotStore>,
    /// Metrics and access log.
    pub recorder: Arc<Recorder>,
    /// Request limits.
    pub limits: RequestLimits,
    /// Rate limits and budgets of subscriptions and consumers.
    pub limiter: Arc<Limiter>,
    /// Passive health of providers and their key pools.
    pub health: Health,
    /// Retry budgets of routes.
    pub retries: RetryBudgets,
    /// Stored answers of routes with a cache.
    pub cache: Arc<ResponseCache>,
    /// The key that seals legacy-era MCP session ids; replicas that share it continue each other's
    /// sessions.
    pub mcp_session_key: [u8; 32],
    /// Upstream MCP servers: connections, sessions and tool lists.
    pub mcp_upstreams: super::mcp_upstream::McpUpstreams,
    /// Connections to guardrails' moderation services.
    pub moderation: crate::upstream::ModerationPool,
    /// Access tokens of Vertex AI providers' service accounts.
    pub google_tokens: crate::upstream::google::GoogleTokens,
    /// The clock consumer keys expire by.
    pub key_clock: crate::clock::Clock,
}
