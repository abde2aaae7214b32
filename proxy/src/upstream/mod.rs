//! Upstream HTTP below every call: connection pools per provider identity, the request parts of each
//! snapshot's providers (URLs, credential and `Host` headers, made when a snapshot is stored),
//! weighted balancing with fallbacks and retry budgets, passive health (ejection, resting keys), and
//! Google service-account access tokens (`google.rs`).

pub mod balance;
pub mod google;
pub mod health;
mod mcp;
mod moderation;
mod parts;
mod pool;
mod rest;
pub mod tls;

pub use mcp::McpPools;
pub use moderation::ModerationPool;
pub use parts::{Checkin, Prepared, ProviderParts, UpstreamError, Upstreams};
