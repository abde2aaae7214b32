//! Upstream HTTP: pooled clients per provider identity, timeouts, and credentials.
//!
//! Pools live here, outside any snapshot, keyed by the provider's `namespace/name`: a snapshot swap that
//! leaves a provider's endpoint and connect timeout alone keeps its warm connections.

use std::sync::{Arc, RwLock};
use std::time::Duration;
use tollgate_snapshot::FxHashMap;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tollgate_snapshot::{ObjectRef, Provider};

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One provider's pooled client.
struct Pool {
    connect_ms: u64,
    client: HttpClient,
}

/// Every upstream pool.
pub struct Upstreams {
    tls: rustls::ClientConfig,
    pools: RwLock<FxHashMap<ObjectRef, Arc<Pool>>>,
}

/// Why an upstream call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection could not be made (refused, DNS, TLS).
    #[error("could not connect to the provider")]
    Connect,
    /// No response headers within connect + first-byte (or the total) timeout.
    #[error("the provider did not answer in time")]
    Timeout,
    /// The connection broke before the response headers.
    #[error("the provider's connection failed before it answered")]
    Broken,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstreams {
    /// Pools that trust the Mozilla root set (webpki-roots) for https endpoints.
    pub fn new() -> Self {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            tls,
            pools: RwLock::new(FxHashMap::default()),
        }
    }

    fn pool(&self, provider: &Provider) -> Arc<Pool> {
        let connect_ms = provider.timeouts.connect_ms;
        if let Some(pool) = self.pools.read().expect("pool lock").get(&provider.id)
            && pool.connect_ms == connect_ms
        {
            return pool.clone();
        }
        let mut pools = self.pools.write().expect("pool lock");
        if let Some(pool) = pools.get(&provider.id)
            && pool.connect_ms == connect_ms
        {
            return pool.clone();
        }
        let pool = Arc::new(Pool {
            connect_ms,
            client: self.build_client(Duration::from_millis(connect_ms)),
        });
        pools.insert(provider.id.clone(), pool.clone());
        pool
    }

    fn build_client(&self, connect: Duration) -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https)
    }

    /// The credential header for key `index` of the provider's pool (as chosen by [`crate::health`],
    /// which rests refused keys); `None` for keyless providers.
    pub fn credential_at(
        &self,
        provider: &Provider,
        index: Option<usize>,
    ) -> Option<(HeaderName, HeaderValue)> {
        let key = provider.credentials.get(index?)?;
        let name = HeaderName::from_bytes(provider.auth.header.as_bytes()).ok()?;
        let mut value =
            HeaderValue::from_str(&format!("{}{}", provider.auth.prefix, key.0)).ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }

    /// Sends one request to `provider`, waiting at most until the response headers are due.
    pub async fn send(
        &self,
        provider: &Provider,
        request: Request<Full<Bytes>>,
        headers_due: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pool = self.pool(provider);
        match tokio::time::timeout(headers_due, pool.client.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect),
            Ok(Err(_)) => Err(UpstreamError::Broken),
            Ok(Ok(response)) => Ok(response),
        }
    }
}
