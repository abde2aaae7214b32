//! The TLS client settings every https upstream pool starts from.

/// The TLS client settings for https upstreams: ring, the default protocol versions, and trust in
/// the Mozilla root set (webpki-roots).
pub(super) fn public_roots() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}
