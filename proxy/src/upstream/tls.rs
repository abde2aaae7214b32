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

/// The certificates of a PEM text as trust roots, and how many of its certificates could not be
/// used (not X.509 a root store accepts). Anything in the text that is not a certificate is skipped.
pub fn roots_from_pem(pem: &str) -> (rustls::RootCertStore, usize) {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    let mut refused = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
        if roots.add(cert).is_err() {
            refused += 1;
        }
    }
    (roots, refused)
}

/// Why a CA file cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("it holds no certificate that can be used as a trust root")]
    NoCertificate,
    #[error("{0} of its certificates cannot be used as trust roots")]
    Refused(usize),
}

/// The TLS client settings for a collector or other service outside the providers: trust in the
/// certificates of `ca_pem` alone when given (a private CA), else in the public roots, as for
/// providers. A CA text with an unusable certificate is refused whole rather than trusted in part.
pub fn client_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, CaError> {
    let Some(pem) = ca_pem else {
        return Ok(public_roots());
    };
    let (roots, refused) = roots_from_pem(pem);
    if refused > 0 {
        return Err(CaError::Refused(refused));
    }
    if roots.is_empty() {
        return Err(CaError::NoCertificate);
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// An http and https connector with `tls` (as the upstream pools make them: no Nagle, keep-alive,
/// HTTP/2 by ALPN), for clients outside the pools such as the OTLP exporters.
pub fn connector(
    tls: rustls::ClientConfig,
    connect: std::time::Duration,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    super::pool::connector(tls, connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_is_trusted_alone_and_refused_when_it_holds_no_usable_certificate() {
        let ca = rcgen::generate_simple_self_signed(vec!["collector".into()]).unwrap();
        let pem = ca.cert.pem();
        assert!(client_config(Some(&pem)).is_ok());
        assert_eq!(roots_from_pem(&pem).0.len(), 1);
        assert!(matches!(
            client_config(Some("not a certificate")),
            Err(CaError::NoCertificate)
        ));
        let damaged = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            client_config(Some(&format!("{pem}{damaged}"))),
            Err(CaError::Refused(1))
        ));
        assert!(client_config(None).is_ok());
    }
}
