//! Following a Tollgate controller: the snapshot stream in, usage reports out.
//!
//! The proxy opens `GET /v1/snapshots` over TLS with its ServiceAccount token and receives frames (the
//! wire form, shared with the controller, is `tollgate_snapshot::wire`): snapshots, and heartbeats.
//! On any failure it keeps serving the last snapshot and reconnects with exponential backoff and
//! jitter. Usage deltas per subscription go to `POST /v1/usage` every few seconds; deltas the
//! controller did not accept (it may not be the leader) are kept and sent again.
//!
//! A proxy never goes back to an older snapshot. Every controller replica compiles and streams, and
//! a snapshot's version is the time its replica compiled a change (`max(now_ms, previous + 1)`), so
//! after a reconnection (a controller restarted, another replica answered) a replica whose watch lags
//! offers an older version than the one held: it is refused, logged, and the proxy keeps serving what
//! it has until that replica catches up with a newer one. (This relies on the replicas' clocks
//! agreeing to better than the time between two changes; a restarted proxy takes whatever it is given.)

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use bytes::{Buf, Bytes, BytesMut};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tollgate_snapshot::Snapshot;
use tollgate_snapshot::wire::{self, FRAME_HEADER_LEN, UsageDelta, UsageReport};

use crate::telemetry::{Tally, UsageTally};

/// Without any frame (heartbeats included) for this long, the stream is presumed dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(35);
/// First and largest pause between reconnection attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Where the controller is and how to prove who we are.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Base URL, e.g. `https://tollgate-controller.tollgate-system.svc:8443`.
    pub url: Uri,
    /// PEM bundle of the CA(s) that signed the controller's certificate.
    pub ca_file: PathBuf,
    /// File holding the projected ServiceAccount token; re-read on every connection (it rotates).
    pub token_file: PathBuf,
    /// How often usage is reported.
    pub usage_interval: Duration,
}

type HttpsClient<B> = Client<HttpsConnector<HttpConnector>, B>;

fn https_client<B>(ca_file: &Path, keep_alive: bool) -> anyhow::Result<HttpsClient<B>>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {}", ca_file.display()))?
    {
        roots
            .add(cert.with_context(|| format!("parsing {}", ca_file.display()))?)
            .context("adding a CA certificate")?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate", ca_file.display());
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let mut builder = Client::builder(TokioExecutor::new());
    if !keep_alive {
        // A fresh connection per report lets a Service spread reports over replicas until one leads.
        builder.pool_max_idle_per_host(0);
    }
    Ok(builder.build(connector))
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

fn endpoint(base: &Uri, path: &str) -> anyhow::Result<Uri> {
    let base = base.to_string();
    format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .context("building the controller URL")
}

/// Exponential backoff with jitter: each pause is drawn between half and all of the current step.
struct Backoff {
    step: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            step: BACKOFF_FIRST,
        }
    }

    fn next(&mut self) -> Duration {
        let pause = self.step.mul_f64(0.5 + fastrand::f64() * 0.5);
        self.step = (self.step * 2).min(BACKOFF_MAX);
        pause
    }

    fn reset(&mut self) {
        self.step = BACKOFF_FIRST;
    }
}

/// Follows the controller's snapshot stream forever, calling `on_snapshot` with every new snapshot.
///
/// Never returns; errors are logged and retried. Until the first snapshot arrives nothing is called,
/// which keeps the proxy not-ready.
pub async fn follow(cfg: ControllerConfig, on_snapshot: impl Fn(Snapshot) + Send + Sync) {
    let mut backoff = Backoff::new();
    let mut held = Held::default();
    let client = match https_client::<Empty<Bytes>>(&cfg.ca_file, true) {
        Ok(client) => client,
        Err(error) => {
            // Without a CA nothing can ever work; say so loudly and keep the proxy not-ready.
            tracing::error!(error = %format!("{error:#}"), "cannot set up the controller connection");
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    loop {
        let result = stream_once(&cfg, &client, &mut held, &on_snapshot, &mut backoff).await;
        let pause = backoff.next();
        match result {
            Ok(()) => tracing::warn!(
                retry_in_ms = pause.as_millis() as u64,
                "the controller ended the snapshot stream; reconnecting"
            ),
            Err(error) => tracing::warn!(
                error = %format!("{error:#}"),
                retry_in_ms = pause.as_millis() as u64,
                "snapshot stream failed; serving the last snapshot and reconnecting"
            ),
        }
        tokio::time::sleep(pause).await;
    }
}

async fn stream_once(
    cfg: &ControllerConfig,
    client: &HttpsClient<Empty<Bytes>>,
    held: &mut Held,
    on_snapshot: &(impl Fn(Snapshot) + Send + Sync),
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let token = read_token(&cfg.token_file)?;
    let request = Request::get(endpoint(&cfg.url, wire::SNAPSHOTS_PATH)?)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())?;
    let response = tokio::time::timeout(SILENCE_LIMIT, client.request(request))
        .await
        .map_err(|_| anyhow!("no answer from the controller"))?
        .context("connecting to the controller")?;
    let status = response.status();
    if status != StatusCode::OK {
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        let detail = body
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        bail!("the controller answered {status}: {}", detail.trim());
    }
    tracing::info!(controller = %cfg.url, "connected to the controller");
    let mut body = response.into_body();
    let mut frames = FrameReader::default();
    loop {
        let frame = match tokio::time::timeout(SILENCE_LIMIT, body.frame()).await {
            Err(_) => bail!("no frame or heartbeat for {SILENCE_LIMIT:?}"),
            Ok(None) => return Ok(()),
            Ok(Some(frame)) => frame.context("reading the snapshot stream")?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        frames.push(&data);
        while let Some(payload) = frames.next_frame()? {
            let Some(snapshot) = wire::decode_payload(&payload).context("decoding a snapshot")?
            else {
                continue; // heartbeat
            };
            backoff.reset();
            match held.offer(&snapshot) {
                Offer::Same => continue,
                Offer::Older { held } => {
                    tracing::warn!(
                        version = snapshot.version,
                        held,
                        controller = %cfg.url,
                        "refusing a snapshot older than the one served (a lagging controller replica?); keeping version {held}"
                    );
                    continue;
                }
                Offer::Newer => {}
            }
            tracing::info!(
                version = snapshot.version,
                routes = snapshot.content.routes.len(),
                bytes = payload.len(),
                "received a snapshot"
            );
            on_snapshot(snapshot);
        }
    }
}

/// The version and hash of the snapshot being served.
#[derive(Default)]
struct Held {
    version: u64,
    hash: Option<String>,
}

/// What to do with a snapshot a controller offers.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    /// The one served (the same content): nothing to do.
    Same,
    /// Older than the one served: refused.
    Older {
        /// The version served.
        held: u64,
    },
    /// Newer (or the first): served from now on.
    Newer,
}

impl Held {
    /// Judges `snapshot`, and holds it when it is to be served.
    fn offer(&mut self, snapshot: &Snapshot) -> Offer {
        if self.hash.as_deref() == Some(snapshot.hash.as_str()) {
            return Offer::Same;
        }
        if self.hash.is_some() && snapshot.version < self.version {
            return Offer::Older { held: self.version };
        }
        self.version = snapshot.version;
        self.hash = Some(snapshot.hash.clone());
        Offer::Newer
    }
}

/// Splits the byte stream into frames.
#[derive(Default)]
struct FrameReader {
    buffer: BytesMut,
}

impl FrameReader {
    fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next complete frame's payload (empty for a heartbeat), if one is buffered.
    fn next_frame(&mut self) -> anyhow::Result<Option<Bytes>> {
        let Some(len) = wire::frame_len(&self.buffer)? else {
            return Ok(None);
        };
        if self.buffer.len() < FRAME_HEADER_LEN + len {
            self.buffer
                .reserve(FRAME_HEADER_LEN + len - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(FRAME_HEADER_LEN);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }
}

/// This process among the proxies: the pod name (a pod's host name) and the process id.
fn instance() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tollgate-proxy".to_owned());
    format!("{host}-{}", std::process::id())
}

fn report_of(proxy: &str, taken: &Tally) -> UsageReport {
    let mut deltas: Vec<UsageDelta> = taken
        .iter()
        .map(|(id, d)| UsageDelta {
            namespace: id.namespace.to_string(),
            name: id.name.to_string(),
            requests: d.requests,
            input_tokens: d.input_tokens,
            output_tokens: d.output_tokens,
            cost_usd: d.cost_usd,
        })
        .collect();
    deltas.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    UsageReport {
        proxy: Some(proxy.to_owned()),
        deltas,
    }
}

/// Sends the tally to the controller every `cfg.usage_interval`, forever. Idle proxies report too
/// (an empty report): the leader counts the proxies it hears from to share limits among them.
pub async fn report_usage(cfg: ControllerConfig, tally: Arc<UsageTally>) {
    let proxy = instance();
    let client = match https_client::<Full<Bytes>>(&cfg.ca_file, false) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "cannot set up usage reporting");
            return;
        }
    };
    loop {
        tokio::time::sleep(cfg.usage_interval).await;
        let taken = tally.take();
        if let Err(error) = send_report(&cfg, &client, &report_of(&proxy, &taken)).await {
            tracing::debug!(error = %format!("{error:#}"), "usage report not accepted; keeping it for the next one");
            tally.put_back(taken);
        }
    }
}

async fn send_report(
    cfg: &ControllerConfig,
    client: &HttpsClient<Full<Bytes>>,
    report: &UsageReport,
) -> anyhow::Result<()> {
    let token = read_token(&cfg.token_file)?;
    let request = Request::post(endpoint(&cfg.url, wire::USAGE_PATH)?)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(report.encode())))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| anyhow!("no answer"))??;
    if !response.status().is_success() {
        bail!("the controller answered {}", response.status());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_snapshot::ObjectRef;

    #[test]
    fn a_snapshot_older_than_the_one_served_is_refused() {
        let snapshot = |version: u64, proxy_replicas: u32| {
            Snapshot::from_content(
                version,
                tollgate_snapshot::Content {
                    proxy_replicas,
                    ..Default::default()
                },
            )
        };
        let mut held = Held::default();
        // The first is taken whatever its version (a restarted proxy follows any controller).
        assert_eq!(held.offer(&snapshot(200, 1)), Offer::Newer);
        assert_eq!(held.offer(&snapshot(200, 1)), Offer::Same);
        // The same content under another version (another replica compiled it): nothing to do.
        assert_eq!(held.offer(&snapshot(100, 1)), Offer::Same);
        assert_eq!(held.offer(&snapshot(150, 2)), Offer::Older { held: 200 });
        assert_eq!(held.offer(&snapshot(200, 2)), Offer::Newer);
        assert_eq!(held.offer(&snapshot(300, 3)), Offer::Newer);
        assert_eq!(held.offer(&snapshot(299, 1)), Offer::Older { held: 300 });
    }

    #[test]
    fn frames_are_split_across_and_within_chunks() {
        let mut reader = FrameReader::default();
        let mut wire = Vec::new();
        wire.extend_from_slice(&3u32.to_be_bytes());
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&0u32.to_be_bytes());
        wire.extend_from_slice(&2u32.to_be_bytes());
        wire.extend_from_slice(b"de");
        reader.push(&wire[..5]);
        assert_eq!(reader.next_frame().unwrap(), None);
        reader.push(&wire[5..]);
        assert_eq!(&reader.next_frame().unwrap().unwrap()[..], b"abc");
        assert!(
            reader.next_frame().unwrap().unwrap().is_empty(),
            "heartbeat"
        );
        assert_eq!(&reader.next_frame().unwrap().unwrap()[..], b"de");
        assert_eq!(reader.next_frame().unwrap(), None);
    }

    #[test]
    fn an_oversized_frame_is_refused() {
        let mut reader = FrameReader::default();
        reader.push(&u32::MAX.to_be_bytes());
        assert!(reader.next_frame().is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= BACKOFF_FIRST / 2 && first <= BACKOFF_FIRST);
        for _ in 0..20 {
            assert!(b.next() <= BACKOFF_MAX);
        }
        assert_eq!(b.step, BACKOFF_MAX);
        b.reset();
        assert_eq!(b.step, BACKOFF_FIRST);
    }

    #[test]
    fn usage_is_summed_per_subscription_and_kept_when_not_accepted() {
        let tally = UsageTally::new();
        let sub = ObjectRef::new("team", "sub");
        tally.record(&sub, 10, 12, 0.25);
        tally.record(&sub, 5, 12, 0.25);
        let taken = tally.take();
        let report = report_of("proxy-7f-1", &taken);
        // The controller reads this form back: see the round trips in `tollgate_snapshot::wire`.
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"proxy":"proxy-7f-1","deltas":[{"namespace":"team","name":"sub","requests":2,"inputTokens":15,"outputTokens":24,"costUsd":0.5}]}"#
        );
        tally.put_back(taken);
        tally.record(&sub, 1, 1, 0.0);
        assert_eq!(tally.take()[&sub].requests, 3);
    }
}
