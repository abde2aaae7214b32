//! The request parts of a snapshot's providers, and the pools they send through.
//!
//! Pools live here, outside any snapshot, keyed by the provider's `namespace/name`: a snapshot swap that
//! leaves a provider's endpoint and connect timeout alone keeps its warm connections.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tollgate_snapshot::FxHashMap;

use arc_swap::ArcSwapOption;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tollgate_snapshot::{ObjectRef, Provider, ProviderIdx, ProviderType, Snapshot};

use super::google::{KeyError, ServiceAccount};

use super::pool::{self, ConnPool};
pub use super::pool::{Checkin, UpstreamError};

/// One provider's connections.
struct Pool {
    connect_ms: u64,
    conns: Arc<ConnPool>,
}

/// Every upstream pool.
pub struct Upstreams {
    tls: rustls::ClientConfig,
    pools: RwLock<FxHashMap<ObjectRef, Arc<Pool>>>,
    /// The request parts of the snapshot stored last.
    prepared: ArcSwapOption<Prepared>,
    /// The pools of routes' REST services.
    rest: super::rest::RestPools,
}

/// Paths of the OpenAI-style endpoints, appended to a provider's `endpoint`; [`ProviderParts::uri`]
/// takes an index into this list.
pub const OPENAI_PATHS: [&str; 4] = [
    "/chat/completions",
    "/embeddings",
    "/messages",
    "/responses",
];

/// What every call to the providers of one snapshot needs, made once when the snapshot is stored
/// (off the request path): finding the pool, parsing the URL and formatting the credential and `Host`
/// headers cost more than building the rest of the request.
pub struct Prepared {
    /// Which snapshot this was made from (a `Weak` keeps the address from being reused).
    snapshot: Weak<Snapshot>,
    providers: Vec<ProviderParts>,
    /// Each route's REST service parts, by route index.
    rest: Vec<Option<super::rest::RestParts>>,
}

/// One provider's share of [`Prepared`].
pub struct ProviderParts {
    pool: Arc<Pool>,
    /// One header per key of the pool; `None` where the key is not a valid header value.
    credentials: Vec<Option<(HeaderName, HeaderValue)>>,
    /// `endpoint` + each of [`OPENAI_PATHS`]; `None` where that is not a valid URL.
    uris: [Option<Uri>; OPENAI_PATHS.len()],
    /// The `Host` header the client would otherwise format on every request.
    host: Option<HeaderValue>,
    /// The endpoint's host and port, as a sampled call's client span names its server.
    server: Option<(Arc<str>, u16)>,
    /// Vertex AI: each key of the pool read as a service account (the reason where it cannot be).
    accounts: Vec<Result<Arc<ServiceAccount>, KeyError>>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstreams {
    /// Pools that trust the Mozilla root set (webpki-roots) for https endpoints.
    pub fn new() -> Self {
        let tls = super::tls::public_roots();
        Self {
            tls,
            pools: RwLock::new(FxHashMap::default()),
            prepared: ArcSwapOption::empty(),
            rest: super::rest::RestPools::default(),
        }
    }

    /// Makes the request parts of `snapshot`'s providers and keeps them for its calls: called when a
    /// snapshot is stored, before any request can load it.
    pub fn prepare(&self, snapshot: &Arc<Snapshot>) {
        self.prepared
            .store(Some(Arc::new(self.parts_for(snapshot))));
    }

    /// The request parts of `snapshot`'s providers: the ones [`Upstreams::prepare`] made for it, or,
    /// for a call that loaded its snapshot just before a swap, a copy made for that call alone.
    pub fn prepared(&self, snapshot: &Arc<Snapshot>) -> Arc<Prepared> {
        if let Some(prepared) = self.prepared.load_full()
            && prepared.snapshot.as_ptr() == Arc::as_ptr(snapshot)
        {
            return prepared;
        }
        Arc::new(self.parts_for(snapshot))
    }

    fn parts_for(&self, snapshot: &Arc<Snapshot>) -> Prepared {
        Prepared {
            snapshot: Arc::downgrade(snapshot),
            providers: snapshot
                .content
                .providers
                .iter()
                .map(|provider| self.parts_of(provider))
                .collect(),
            rest: self.rest.parts_for(snapshot, &self.tls),
        }
    }

    fn parts_of(&self, provider: &Provider) -> ProviderParts {
        let uris =
            OPENAI_PATHS.map(|path| Uri::try_from(format!("{}{path}", provider.endpoint)).ok());
        let host = uris[0].as_ref().and_then(pool::host_header);
        let server = uris[0].as_ref().and_then(server_of);
        let accounts = if provider.provider_type == ProviderType::VertexAi {
            provider
                .credentials
                .iter()
                .map(|c| ServiceAccount::from_json(c.0.as_bytes()).map(Arc::new))
                .collect()
        } else {
            Vec::new()
        };
        ProviderParts {
            pool: self.pool(provider),
            // A Vertex AI key is a service account's private key: it never goes in a header.
            credentials: if accounts.is_empty() {
                (0..provider.credentials.len())
                    .map(|i| credential_header(provider, i))
                    .collect()
            } else {
                Vec::new()
            },
            uris,
            host,
            server,
            accounts,
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
            conns: Arc::new(ConnPool::new(
                self.connector(Duration::from_millis(connect_ms)),
            )),
        });
        pools.insert(provider.id.clone(), pool.clone());
        pool
    }

    fn connector(&self, connect: Duration) -> HttpsConnector<HttpConnector> {
        pool::connector(self.tls.clone(), connect)
    }
}

impl Prepared {
    /// The parts of provider `idx` of the snapshot this was made from.
    pub fn provider(&self, idx: ProviderIdx) -> &ProviderParts {
        &self.providers[idx as usize]
    }

    /// The parts of route `idx`'s REST service, if it has one.
    pub fn rest(&self, idx: tollgate_snapshot::RouteIdx) -> Option<&super::rest::RestParts> {
        self.rest.get(idx as usize)?.as_ref()
    }
}

impl ProviderParts {
    /// The credential header for key `index` of the pool; `None` for keyless providers.
    pub fn credential(&self, index: Option<usize>) -> Option<(HeaderName, HeaderValue)> {
        self.credentials.get(index?)?.clone()
    }

    /// Key `index` of a Vertex AI provider's pool as a service account.
    pub fn service_account(&self, index: Option<usize>) -> Result<&Arc<ServiceAccount>, KeyError> {
        match self.accounts.get(index.unwrap_or(0)) {
            Some(Ok(account)) => Ok(account),
            Some(Err(e)) => Err(*e),
            None => Err(KeyError::NoKey),
        }
    }

    /// The URL of [`OPENAI_PATHS`]`[path]` at this provider, if the endpoint makes a valid one.
    pub fn uri(&self, path: usize) -> Option<Uri> {
        self.uris[path].clone()
    }

    /// The `Host` header for this provider's endpoint.
    pub fn host(&self) -> Option<HeaderValue> {
        self.host.clone()
    }

    /// The host and port a request to `uri` goes to (the scheme's default port when it names
    /// none): this provider's own, worked out once, when `uri` is at its endpoint.
    pub fn server(&self, uri: &Uri) -> Option<(Arc<str>, u16)> {
        match &self.uris[0] {
            Some(base) if same_authority(base, uri) && base.scheme() == uri.scheme() => {
                self.server.clone()
            }
            _ => server_of(uri),
        }
    }

    /// Sends one request through this provider's pool, waiting at most until the response headers
    /// are due. Keep the [`Checkin`] until the answer's body is read: it then gives the connection
    /// back.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        headers_due: Duration,
    ) -> Result<(Response<Incoming>, Option<Checkin>), UpstreamError> {
        self.pool.conns.send_within(request, headers_due).await
    }
}

/// The header carrying key `index` of the provider's pool, marked sensitive so it is never printed.
fn credential_header(provider: &Provider, index: usize) -> Option<(HeaderName, HeaderValue)> {
    let key = provider.credentials.get(index)?;
    let name = HeaderName::from_bytes(provider.auth.header.as_bytes()).ok()?;
    let mut value = HeaderValue::from_str(&format!("{}{}", provider.auth.prefix, key.0)).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// Whether two URIs name the same authority: the same bytes (a request made from the provider's
/// own endpoint, the usual case, compared as one slice), else the same ignoring case, as
/// `Authority`'s own comparison (byte by byte) has it.
fn same_authority(a: &Uri, b: &Uri) -> bool {
    a.authority().map(|x| x.as_str()) == b.authority().map(|x| x.as_str())
        || a.authority() == b.authority()
}

/// The host and port of `uri`; without a port, 80 for `http` and 443 for anything else.
fn server_of(uri: &Uri) -> Option<(Arc<str>, u16)> {
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    Some((uri.host()?.into(), port))
}

#[cfg(test)]
mod tests {
    use crate::upstream::pool::host_header;
    use http::Uri;

    #[test]
    fn a_server_is_its_host_and_port_or_the_schemes_default() {
        let server = |url: &str| super::server_of(&Uri::try_from(url).unwrap());
        assert_eq!(
            server("https://api.openai.com/v1"),
            Some(("api.openai.com".into(), 443))
        );
        assert_eq!(
            server("http://vllm.internal/v1"),
            Some(("vllm.internal".into(), 80))
        );
        assert_eq!(
            server("http://127.0.0.1:8080/v1"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(server("/v1/chat/completions"), None);
    }

    #[test]
    fn authorities_are_the_same_byte_for_byte_or_ignoring_case() {
        let same = |a: &str, b: &str| {
            super::same_authority(&Uri::try_from(a).unwrap(), &Uri::try_from(b).unwrap())
        };
        assert!(same(
            "https://api.openai.com/v1",
            "https://api.openai.com/v1/chat"
        ));
        assert!(same(
            "https://API.OpenAI.com/v1",
            "https://api.openai.com/v1"
        ));
        assert!(!same(
            "https://api.openai.com/v1",
            "https://api.openai.com:8443/v1"
        ));
        assert!(!same("https://api.openai.com/v1", "/v1/chat/completions"));
        assert!(same("/v1", "/v1/chat/completions"));
    }

    #[test]
    fn host_headers_leave_out_only_the_schemes_default_port() {
        let host = |url: &str| host_header(&Uri::try_from(url).unwrap()).unwrap();
        assert_eq!(
            host("https://api.openai.com/v1/chat/completions"),
            "api.openai.com"
        );
        assert_eq!(host("https://api.openai.com:443/v1"), "api.openai.com");
        assert_eq!(host("http://127.0.0.1:8080/v1"), "127.0.0.1:8080");
        assert_eq!(host("http://vllm.internal:80/v1"), "vllm.internal");
        assert_eq!(host("https://vllm.internal:80/v1"), "vllm.internal:80");
        assert_eq!(host("http://[::1]:9000/v1"), "[::1]:9000");
    }
}
