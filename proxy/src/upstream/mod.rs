//! Upstream HTTP below every call: connection pools per provider identity, the request parts of each
//! snapshot's providers (URLs, credential and `Host` headers, made when a snapshot is stored),
//! weighted balancing with fallbacks and retry budgets, and passive health (ejection, resting keys).

pub mod balance;
pub mod health;
mod mcp;
mod parts;
mod pool;
mod rest;

pub use mcp::McpPools;
pub use parts::{Checkin, Prepared, ProviderParts, UpstreamError, Upstreams};

/// The TLS client settings for https upstreams: ring, the default protocol versions, and trust in
/// the Mozilla root set (webpki-roots).
fn public_roots_tls() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}
