//! One provider's upstream connections: HTTP/1.1 connections carry one request at a time and wait in
//! a list between requests; an HTTP/2 connection (when TLS negotiates `h2`) is shared by every request.
//!
//! This replaces hyper-util's general client on the hot path. A call takes a connection from a plain
//! list under a mutex and gives it back, through [`Checkin`], once its answer has been read: no task is
//! spawned, no future boxed and no origin hashed per call (about 9k instructions per call less).

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

type Body = Full<Bytes>;

/// How long an unused HTTP/1.1 connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most unused HTTP/1.1 connections kept by one pool.
const MAX_IDLE: usize = 1024;
/// Kept connections tried for one request before a new one is made: a provider may close a kept
/// connection just as a request is put on it.
const REUSE_TRIES: usize = 3;

/// Scheme and authority: which connections can carry a request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
}

impl Origin {
    fn of(uri: &Uri) -> Option<Self> {
        Some(Self {
            scheme: uri.scheme()?.clone(),
            authority: uri.authority()?.clone(),
        })
    }
}

struct Idle {
    origin: Origin,
    sender: http1::SendRequest<Body>,
    since: Instant,
}

#[derive(Default)]
struct Kept {
    /// Unused HTTP/1.1 connections, the most recently used last.
    idle: Vec<Idle>,
    /// Shared HTTP/2 connections, one per origin.
    h2: Vec<(Origin, http2::SendRequest<Body>)>,
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

/// Why a request got no response.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// No connection could be made (refused, DNS, TLS, or the URL has no scheme and host).
    Connect,
    /// The connection failed before the response headers.
    Broken,
}

/// The connections of one provider.
pub struct ConnPool {
    connector: HttpsConnector<HttpConnector>,
    kept: Mutex<Kept>,
}

/// Gives an HTTP/1.1 connection back to its pool when dropped. Hold it until the answer's body has
/// been read or dropped: until then the connection is still carrying it.
pub struct Checkin {
    pool: Arc<ConnPool>,
    origin: Origin,
    sender: Option<http1::SendRequest<Body>>,
}

enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl ConnPool {
    /// A pool that makes its connections with `connector`.
    pub fn new(connector: HttpsConnector<HttpConnector>) -> Self {
        Self {
            connector,
            kept: Mutex::new(Kept::default()),
        }
    }

    /// [`ConnPool::send`], waiting at most `headers_due` for the response headers.
    pub async fn send_within(
        self: &Arc<Self>,
        request: Request<Body>,
        headers_due: Duration,
    ) -> Result<(Response<Incoming>, Option<Checkin>), UpstreamError> {
        match tokio::time::timeout(headers_due, self.send(request)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(SendError::Connect)) => Err(UpstreamError::Connect),
            Ok(Err(SendError::Broken)) => Err(UpstreamError::Broken),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request` (with an absolute URL) on a kept connection, or on a new one. A request that a
    /// kept connection could not take (closed meanwhile) goes on another; one that was written is
    /// never sent twice.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), SendError> {
        let uri = request.uri().clone();
        let origin = Origin::of(&uri).ok_or(SendError::Connect)?;
        let mut tries = 0;
        loop {
            let kept = (tries < REUSE_TRIES)
                .then(|| self.checkout(&origin))
                .flatten();
            let reused = kept.is_some();
            let conn = match kept {
                Some(conn) => conn,
                // Boxed: connecting (TLS, HTTP/2 handshake) is rare and would otherwise make every
                // call's future as large as its own.
                None => Box::pin(self.connect(&origin)).await?,
            };
            tries += 1;
            *request.uri_mut() = uri.clone();
            let sent = match conn {
                Conn::H2(mut sender) => {
                    // :authority carries the host; a second copy in `Host` is not wanted.
                    request.headers_mut().remove(header::HOST);
                    sender.try_send_request(request).await.map(|r| (r, None))
                }
                Conn::H1(mut sender) => {
                    if !request.headers().contains_key(header::HOST) {
                        request
                            .headers_mut()
                            .insert(header::HOST, host_header(&uri).ok_or(SendError::Connect)?);
                    }
                    // HTTP/1.1 sends the path only.
                    *request.uri_mut() = uri
                        .path_and_query()
                        .cloned()
                        .map_or_else(|| Uri::from_static("/"), Uri::from);
                    sender.try_send_request(request).await.map(|response| {
                        let checkin = Checkin {
                            pool: self.clone(),
                            origin: origin.clone(),
                            sender: Some(sender),
                        };
                        (response, Some(checkin))
                    })
                }
            };
            match sent {
                Ok(answer) => return Ok(answer),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Broken),
                },
            }
        }
    }

    /// A kept connection to `origin` that can take a request now; closed and expired ones are dropped.
    fn checkout(&self, origin: &Origin) -> Option<Conn> {
        let mut kept = self.kept();
        kept.h2.retain(|(_, sender)| !sender.is_closed());
        if let Some((_, sender)) = kept.h2.iter().find(|(o, _)| o == origin) {
            return Some(Conn::H2(sender.clone()));
        }
        let now = Instant::now();
        while let Some(at) = kept.idle.iter().rposition(|c| c.origin == *origin) {
            let idle = kept.idle.remove(at);
            if now.duration_since(idle.since) < IDLE_TIMEOUT && idle.sender.is_ready() {
                return Some(Conn::H1(idle.sender));
            }
        }
        None
    }

    async fn connect(&self, origin: &Origin) -> Result<Conn, SendError> {
        let target = Uri::builder()
            .scheme(origin.scheme.clone())
            .authority(origin.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| SendError::Connect)?;
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|_| SendError::Connect)?;
        let io = connector
            .call(target)
            .await
            .map_err(|_| SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|_| SendError::Connect)?;
            tokio::spawn(connection);
            let mut kept = self.kept();
            kept.h2.retain(|(o, _)| o != origin);
            kept.h2.push((origin.clone(), sender.clone()));
            return Ok(Conn::H2(sender));
        }
        let (sender, connection) = http1::handshake(io).await.map_err(|_| SendError::Connect)?;
        tokio::spawn(connection);
        Ok(Conn::H1(sender))
    }

    fn put(&self, origin: Origin, sender: http1::SendRequest<Body>) {
        let now = Instant::now();
        let mut kept = self.kept();
        // The oldest are first: drop those past their time, and the oldest when the list is full.
        let expired = kept
            .idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
            .count();
        kept.idle.drain(..expired);
        if kept.idle.len() >= MAX_IDLE {
            kept.idle.remove(0);
        }
        kept.idle.push(Idle {
            origin,
            sender,
            since: now,
        });
    }

    #[cfg(test)]
    /// Unused HTTP/1.1 connections kept now.
    pub fn idle_count(&self) -> usize {
        self.kept().idle.len()
    }
}

impl Drop for Checkin {
    fn drop(&mut self) {
        let Some(mut sender) = self.sender.take() else {
            return;
        };
        if sender.is_ready() {
            self.pool.put(self.origin.clone(), sender);
            return;
        }
        if sender.is_closed() {
            return;
        }
        // The answer was read but the connection task has not caught up yet, or the answer was
        // abandoned (hyper then closes the connection and `ready` fails). Rare: wait aside.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (pool, origin) = (self.pool.clone(), self.origin.clone());
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put(origin, sender);
            }
        });
    }
}

/// A connector for `http` and `https` URLs (HTTP/1.1, and HTTP/2 where TLS negotiates it) that trusts
/// what `tls` trusts and gives up connecting after `connect`.
pub fn connector(tls: rustls::ClientConfig, connect: Duration) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect));
    http.set_keepalive(Some(Duration::from_secs(60)));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}

/// `Host` as HTTP/1.1 wants it: the host, and the port unless it is the scheme's default.
pub fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    match uri.port_u16() {
        Some(port) if Some(port) != default => {
            HeaderValue::from_str(&format!("{host}:{port}")).ok()
        }
        _ => HeaderValue::from_str(host).ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use hyper_util::server::conn::auto;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;

    /// A server on 127.0.0.1 answering `ok` after `delay`, counting the connections it accepts. It
    /// closes a connection left unused for 300 ms, as providers close idle keep-alive connections.
    async fn server(tls: Option<TlsAcceptor>, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| async move {
                        let version = format!("{:?}", request.version());
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            version,
                        ))))
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_millis(300));
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn pool(roots: rustls::RootCertStore) -> Arc<ConnPool> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Arc::new(ConnPool::new(connector))
    }

    /// Sends one POST and reads the whole answer, then gives the connection back; returns the body.
    async fn call(pool: &Arc<ConnPool>, url: &str) -> String {
        let request = Request::post(url)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (response, checkin) = pool.send(request).await.expect("an answer");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        drop(checkin);
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// `n` calls at once.
    async fn together(pool: &Arc<ConnPool>, url: &str, n: usize) -> Vec<String> {
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let (pool, url) = (pool.clone(), url.to_string());
                tokio::spawn(async move { call(&pool, &url).await })
            })
            .collect();
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.unwrap());
        }
        answers
    }

    #[tokio::test]
    async fn http1_connections_are_kept_and_reused() {
        let (addr, accepted) = server(None, Duration::ZERO).await;
        let pool = pool(rustls::RootCertStore::empty());
        let url = format!("http://{addr}/v1/chat/completions");
        for _ in 0..5 {
            assert_eq!(call(&pool, &url).await, "HTTP/1.1");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for five calls in a row"
        );
        assert_eq!(pool.idle_count(), 1);

        // Four at once need four connections; all four are kept and carry the next calls.
        together(&pool, &url, 4).await;
        let opened = accepted.load(Ordering::SeqCst);
        assert!(opened <= 4, "{opened} connections for four calls");
        for _ in 0..8 {
            call(&pool, &url).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            opened,
            "kept connections are reused"
        );
    }

    #[tokio::test]
    async fn a_connection_the_provider_closed_is_replaced_without_losing_the_call() {
        let (addr, accepted) = server(None, Duration::ZERO).await;
        let pool = pool(rustls::RootCertStore::empty());
        let url = format!("http://{addr}/v1/embeddings");
        call(&pool, &url).await;
        // The server closes the kept connection after 300 ms unused.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(call(&pool, &url).await, "HTTP/1.1");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_whose_answer_was_abandoned_is_not_kept() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Promises 100 bytes, sends 7 and keeps the connection open: the answer never ends.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = stream.read(&mut head).await;
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial";
                    let _ = stream.write_all(answer).await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        let pool = pool(rustls::RootCertStore::empty());
        let request = Request::post(format!("http://{addr}/v1/chat/completions"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (response, checkin) = pool.send(request).await.unwrap();
        drop(checkin);
        assert_eq!(
            pool.idle_count(),
            0,
            "the connection is still carrying the answer"
        );
        drop(response);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            pool.idle_count(),
            0,
            "an abandoned answer closes its connection"
        );
    }

    #[tokio::test]
    async fn unreachable_providers_and_urls_without_a_host_are_connect_errors() {
        let pool = pool(rustls::RootCertStore::empty());
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let request = Request::post(format!("http://{addr}/v1/embeddings"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(pool.send(request).await.err(), Some(SendError::Connect));
        let request = Request::post("/v1/embeddings")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(pool.send(request).await.err(), Some(SendError::Connect));
    }

    #[tokio::test]
    async fn http2_over_tls_is_one_connection_shared_by_concurrent_calls() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        // Made here rather than by the listener's code, which is a layer above this one.
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (addr, accepted) = server(Some(acceptor), Duration::from_millis(50)).await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone()).unwrap();
        let pool = pool(roots);
        let url = format!("https://localhost:{}/v1/chat/completions", addr.port());

        assert_eq!(call(&pool, &url).await, "HTTP/2.0");
        let answers = together(&pool, &url, 6).await;
        assert!(answers.iter().all(|a| a == "HTTP/2.0"), "{answers:?}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one HTTP/2 connection for seven calls"
        );
        assert_eq!(
            pool.idle_count(),
            0,
            "HTTP/2 is not kept in the HTTP/1.1 list"
        );
    }
}
