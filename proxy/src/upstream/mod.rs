//! Upstream HTTP below every call: connection pools per provider identity, the request parts of each
//! snapshot's providers (URLs, credential and `Host` headers, made when a snapshot is stored),
//! weighted balancing with fallbacks and retry budgets, and passive health (ejection, resting keys).

pub mod balance;
pub mod health;
mod mcp;
mod moderation;
mod parts;
mod pool;
mod rest;
mod tls;

pub use mcp::McpPools;
pub use moderation::ModerationPool;
pub use parts::{Checkin, Prepared, ProviderParts, UpstreamError, Upstreams};
