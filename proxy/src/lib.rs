//! Tollgate's data plane: an OpenAI-compatible gateway that serves from a hot-swapped [`Snapshot`].
//!
//! The binary wires this library to flags and signals; tests drive it in-process through [`Proxy`].
//!
//! [`Snapshot`]: tollgate_snapshot::Snapshot

mod call;
pub mod clock;
pub mod control;
mod error;
mod escape;
mod gateway;
mod guard;
mod limits;
mod llm;
mod serve;
mod telemetry;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use call::{CacheConfig, RequestLimits};
pub use clock::Clock;
pub use control::SnapshotStore;
pub use limits::LimitsConfig;
pub use limits::redis::{RedisConfigError, RedisLogin, client as redis_client};
/// AWS Signature Version 4, for tests that check what Bedrock receives.
pub use llm::sigv4;
pub use serve::{ConnectionLimits, TlsFiles};
pub use telemetry::otlp::{LogsConfig, MetricsConfig, Target as OtlpTarget};
pub use telemetry::trace::{
    Protocol as OtlpProtocol, Sampler, TraceConfig, Tracer, UnknownSampler, parse_pairs,
};
pub use telemetry::{AccessLog, OtlpSignals, Recorder};

use call::Shared;

/// How the proxy listens and what it accepts.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Data-plane address.
    pub listen: SocketAddr,
    /// Admin address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// Serve TLS with these files instead of plaintext HTTP/1.1 + h2c.
    pub tls: Option<TlsFiles>,
    /// Per-request limits.
    pub limits: RequestLimits,
    /// Per-connection limits.
    pub connection: ConnectionLimits,
    /// How long in-flight calls may take to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// How rate limits and budgets are counted (Redis, replica shares).
    pub traffic: limits::LimitsConfig,
    /// The response cache's local budget and clock (it shares the limits' Redis).
    pub cache: CacheConfig,
    /// OTLP traces: sampled calls' spans exported to a collector; `None` exports none (the caller's
    /// `traceparent` is still passed upstream).
    pub traces: Option<TraceConfig>,
    /// The GenAI metrics over OTLP; `None` exports none.
    pub metrics: Option<MetricsConfig>,
    /// The access log's lines as OTLP log records too; `None` exports none.
    pub logs: Option<LogsConfig>,
    /// The key sealing legacy-era MCP session ids (see [`mcp_session_key`]); `None`: a random one,
    /// so that only this replica continues its sessions.
    pub mcp_session_key: Option<[u8; 32]>,
    /// The clock that providers' access tokens (Vertex AI's) age by; tests move a manual one.
    pub token_clock: Clock,
    /// The clock consumer keys expire by (`expiresAt`, a rotation's grace); tests move a manual one.
    pub key_clock: Clock,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            tls: None,
            limits: RequestLimits::default(),
            connection: ConnectionLimits {
                max_header_bytes: 64 * 1024,
                idle_timeout: Duration::from_secs(60),
            },
            drain_timeout: Duration::from_secs(30),
            traffic: limits::LimitsConfig {
                redis_url: None,
                redis_timeout: Duration::from_millis(100),
                replicas: None,
                ..limits::LimitsConfig::default()
            },
            cache: CacheConfig::default(),
            traces: None,
            metrics: None,
            logs: None,
            mcp_session_key: None,
            token_clock: Clock::system(),
            key_clock: Clock::system(),
        }
    }
}

/// The MCP session key every replica derives from the same shared secret.
pub fn mcp_session_key(secret: &[u8]) -> [u8; 32] {
    gateway::session_key_from_secret(secret)
}

/// 32 bytes from the kernel's random source (the `getrandom` system call, through the TLS
/// library's provider: the runtime image has no `/dev`).
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut key)
        .expect("the kernel gives random bytes");
    key
}

/// A proxy before it listens: holds the snapshot store, pools, metrics and access log.
pub struct Proxy {
    config: ProxyConfig,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy with no snapshot yet (not ready until one is stored).
    pub fn new(config: ProxyConfig, access_log: AccessLog) -> Self {
        let recorder = Arc::new(Recorder::with_signals(
            access_log,
            OtlpSignals {
                traces: config.traces.clone(),
                metrics: config.metrics.clone(),
                logs: config.logs.clone(),
            },
        ));
        let limiter = Arc::new(limits::Limiter::new(&config.traffic, recorder.clone()));
        let cache = Arc::new(call::ResponseCache::new(
            &config.cache,
            limiter.redis_link(),
            recorder.clone(),
        ));
        let shared = Arc::new(Shared {
            cache,
            store: Arc::new(SnapshotStore::new()),
            recorder,
            limits: config.limits,
            limiter,
            health: upstream::health::Health::new(),
            retries: upstream::balance::RetryBudgets::new(),
            mcp_session_key: config.mcp_session_key.unwrap_or_else(random_key),
            mcp_upstreams: call::McpUpstreams::new(),
            moderation: upstream::ModerationPool::new(),
            google_tokens: upstream::google::GoogleTokens::new(config.token_clock.clone()),
            key_clock: config.key_clock.clone(),
        });
        Self { config, shared }
    }

    /// Where snapshots are swapped in.
    pub fn store(&self) -> Arc<SnapshotStore> {
        self.shared.store.clone()
    }

    /// Metrics and access log.
    pub fn recorder(&self) -> Arc<Recorder> {
        self.shared.recorder.clone()
    }

    /// Binds both listeners (and loads TLS files), so that errors show before serving starts.
    pub async fn bind(self) -> anyhow::Result<BoundProxy> {
        self.shared.limiter.start();
        if let Some(tracer) = &self.shared.recorder.traces {
            tracer.start().context("starting the OTLP trace exporter")?;
        }
        self.shared
            .recorder
            .start_exporters()
            .context("starting the OTLP metrics and logs exporters")?;
        let tls = self
            .config
            .tls
            .as_ref()
            .map(serve::tls_acceptor)
            .transpose()?;
        let listener = TcpListener::bind(self.config.listen)
            .await
            .with_context(|| format!("listening on {}", self.config.listen))?;
        let admin = TcpListener::bind(self.config.admin_listen)
            .await
            .with_context(|| format!("listening on {}", self.config.admin_listen))?;
        Ok(BoundProxy {
            proxy: self,
            listener,
            admin,
            tls,
        })
    }
}

/// A proxy with its listeners bound.
pub struct BoundProxy {
    proxy: Proxy,
    listener: TcpListener,
    admin: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl BoundProxy {
    /// The data-plane address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Where snapshots are swapped in.
    pub fn store(&self) -> Arc<SnapshotStore> {
        self.proxy.store()
    }

    /// Metrics and access log.
    pub fn recorder(&self) -> Arc<Recorder> {
        self.proxy.recorder()
    }

    /// Serves until `shutdown` resolves, then reports not-ready, stops accepting, drains in-flight calls
    /// (up to the drain timeout) and closes the admin port last.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let Self {
            proxy,
            listener,
            admin,
            tls,
        } = self;
        let draining = Arc::new(AtomicBool::new(false));
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = tokio::spawn(serve::serve_admin(
            admin,
            proxy.shared.clone(),
            draining.clone(),
            async move {
                let _ = admin_stopped.await;
            },
        ));
        let flag = draining.clone();
        let shutdown = async move {
            shutdown.await;
            flag.store(true, Ordering::Relaxed);
        };
        serve::serve_data_plane(
            listener,
            tls,
            proxy.shared.clone(),
            proxy.config.connection,
            shutdown,
            proxy.config.drain_timeout,
        )
        .await;
        if let Some(tracer) = &proxy.shared.recorder.traces {
            // The drained calls' spans, sent while the admin port still answers.
            tracer.flush(Duration::from_secs(5)).await;
        }
        proxy
            .shared
            .recorder
            .flush_exporters(Duration::from_secs(5))
            .await;
        let _ = admin_stop.send(());
        let _ = admin_task.await;
    }
}
