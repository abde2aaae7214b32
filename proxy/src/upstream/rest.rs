//! The request parts of routes' REST services, and the pools they send through.
//!
//! A REST service is an upstream like a provider: its pool lives outside any snapshot, keyed by the
//! route's `namespace/name`, and is kept across swaps while the connect timeout and trusted CA stay
//! the same. A service with its own CA trusts only that CA.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use tollgate_snapshot::{FxHashMap, ObjectRef, RestService, Snapshot};

use super::pool::{self, Checkin, ConnPool, UpstreamError};
use bytes::Bytes;

/// One service's connections, and what they were made for.
struct Pool {
    connect_ms: u64,
    ca_pem: Option<String>,
    conns: Arc<ConnPool>,
}

/// The pools of every route's REST service.
#[derive(Default)]
pub struct RestPools {
    pools: RwLock<FxHashMap<ObjectRef, Arc<Pool>>>,
}

/// One REST service's share of a snapshot's prepared parts: made when the snapshot is stored.
pub struct RestParts {
    pool: Arc<Pool>,
    /// The base URL, without a trailing `/`.
    base: BaseUrl,
    /// The credential header, marked sensitive; `None` when the service takes none or its value
    /// is not a valid header (the compiler refuses those).
    credential: Option<(HeaderName, HeaderValue)>,
    /// The `Host` header of the base URL.
    host: Option<HeaderValue>,
}

impl RestPools {
    /// The parts of every route's REST service in `snapshot`, by route index (`None`: no service).
    pub fn parts_for(
        &self,
        snapshot: &Snapshot,
        tls: &rustls::ClientConfig,
    ) -> Vec<Option<RestParts>> {
        snapshot
            .content
            .routes
            .iter()
            .map(|route| {
                let service = route.rest.as_ref()?;
                Some(RestParts {
                    pool: self.pool(&route.id, service, tls),
                    base: BaseUrl::new(&service.base_url),
                    credential: service.credential.as_ref().and_then(|c| {
                        let name = HeaderName::from_bytes(c.header.as_bytes()).ok()?;
                        let mut value = HeaderValue::from_str(&c.value.0).ok()?;
                        value.set_sensitive(true);
                        Some((name, value))
                    }),
                    host: Uri::try_from(service.base_url.as_str())
                        .ok()
                        .as_ref()
                        .and_then(pool::host_header),
                })
            })
            .collect()
    }

    fn pool(&self, id: &ObjectRef, service: &RestService, tls: &rustls::ClientConfig) -> Arc<Pool> {
        let connect_ms = service.timeouts.connect_ms;
        let fits = |pool: &Pool| pool.connect_ms == connect_ms && pool.ca_pem == service.ca_pem;
        if let Some(pool) = self.pools.read().expect("pool lock").get(id)
            && fits(pool)
        {
            return pool.clone();
        }
        let mut pools = self.pools.write().expect("pool lock");
        if let Some(pool) = pools.get(id)
            && fits(pool)
        {
            return pool.clone();
        }
        let tls = match &service.ca_pem {
            None => tls.clone(),
            Some(pem) => with_only_ca(tls, pem, id),
        };
        let pool = Arc::new(Pool {
            connect_ms,
            ca_pem: service.ca_pem.clone(),
            conns: Arc::new(ConnPool::new(pool::connector(
                tls,
                Duration::from_millis(connect_ms),
            ))),
        });
        pools.insert(id.clone(), pool.clone());
        pool
    }
}

/// `tls` trusting only the certificates in `pem`. A PEM without one usable certificate trusts
/// nothing, so calls fail with 502 rather than fall back to the public roots.
fn with_only_ca(tls: &rustls::ClientConfig, pem: &str, id: &ObjectRef) -> rustls::ClientConfig {
    let (roots, refused) = super::tls::roots_from_pem(pem);
    if refused > 0 {
        tracing::warn!(route = %id, refused, "a CA certificate of the REST service could not be used");
    }
    if roots.is_empty() {
        tracing::warn!(route = %id, "the REST service's CA Secret holds no usable certificate: calls will fail");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(tls.crypto_provider().clone())
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = tls.alpn_protocols.clone();
    config
}

impl RestParts {
    /// The upstream URL for `path_and_query` (which starts with `/`), if it makes a valid one.
    pub fn uri(&self, path_and_query: &str) -> Option<Uri> {
        self.base.join(path_and_query)
    }

    /// The credential header, if the service takes one.
    pub fn credential(&self) -> Option<(HeaderName, HeaderValue)> {
        self.credential.clone()
    }

    /// The `Host` header for the service.
    pub fn host(&self) -> Option<HeaderValue> {
        self.host.clone()
    }

    /// Sends one request, waiting at most `headers_due` for the response headers. Keep the
    /// [`Checkin`] until the answer's body is read.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        headers_due: Duration,
    ) -> Result<(Response<Incoming>, Option<Checkin>), UpstreamError> {
        self.pool.conns.send_within(request, headers_due).await
    }
}

/// A REST service's base URL, its scheme and authority parsed once: each call parses only its own
/// path and query, not the whole URL again.
struct BaseUrl {
    text: String,
    /// Scheme, authority and path, when the URL is a plain `scheme://authority[/path]`.
    parsed: Option<(Scheme, Authority, String)>,
}

impl BaseUrl {
    fn new(text: &str) -> Self {
        let parsed = Uri::try_from(text).ok().and_then(|uri| {
            let (scheme, authority) = (uri.scheme()?.clone(), uri.authority()?.clone());
            let path = text.strip_prefix(&format!("{scheme}://{authority}"))?;
            // Anything after the path would change what a joined path means: parse those whole.
            (!path.contains(['?', '#'])).then(|| (scheme, authority, path.to_string()))
        });
        Self {
            text: text.to_string(),
            parsed,
        }
    }

    /// The URL of `path_and_query` (which starts with `/`) below the base: the same as parsing the
    /// two written one after the other.
    fn join(&self, path_and_query: &str) -> Option<Uri> {
        let Some((scheme, authority, path)) = &self.parsed else {
            return Uri::try_from([self.text.as_str(), path_and_query].concat()).ok();
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme.clone());
        parts.authority = Some(authority.clone());
        let joined = Bytes::from([path.as_str(), path_and_query].concat());
        parts.path_and_query = Some(PathAndQuery::from_maybe_shared(joined).ok()?);
        Uri::from_parts(parts).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(base: &str, path_and_query: &str) -> Option<Uri> {
        Uri::try_from([base, path_and_query].concat()).ok()
    }

    #[test]
    fn joins_as_the_whole_url_parses() {
        for base in [
            "http://127.0.0.1:8080/v1",
            "https://orders.team-a.svc",
            "http://[::1]:9000/a/b",
            "http://user@host/x",
            "http://host/x?fixed=1",
        ] {
            let url = BaseUrl::new(base);
            for pq in ["/", "/items/42?x=1&y=%20", "/a#frag", "/b c", "/é"] {
                assert_eq!(url.join(pq), whole(base, pq), "{base} + {pq}");
            }
        }
        assert!(BaseUrl::new("http://host/x?fixed=1").parsed.is_none());
    }

    proptest! {
        #[test]
        fn joins_any_path_as_the_whole_url_parses(
            base in "(http|https)://[a-z0-9.:@\\[\\]]{1,12}(/[a-z0-9%?#]{0,5}){0,2}",
            pq in "/\\PC{0,24}",
        ) {
            prop_assert_eq!(BaseUrl::new(&base).join(&pq), whole(&base, &pq));
        }
    }
}
