//! `tollgate-proxy`: flags, logging and signals around the `tollgate_proxy` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;

use tollgate_proxy::control::client::{self, ControllerConfig};
use tollgate_proxy::control::generated_keys::GeneratedKeys;
use tollgate_proxy::control::standalone::Watcher;
use tollgate_proxy::{
    AccessLog, CacheConfig, ConnectionLimits, LogsConfig, MetricsConfig, OtlpProtocol, OtlpTarget,
    Proxy, ProxyConfig, RequestLimits, Sampler, TlsFiles, TraceConfig,
};
use tollgate_proxy::{LimitsConfig, RedisLogin, redis_client};

/// jemalloc, not glibc's malloc: a call makes about 30 short-lived allocations, and jemalloc's
/// per-thread caches serve them in fewer instructions (76.5k -> 73.0k per chat call under callgrind).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: pages left free for a second go back to the OS, so that a
/// burst's buffers do not stay in the Pod's resident memory (jemalloc's default keeps them 10 s).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static malloc_conf: &[u8; 37] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Tollgate's data plane: an OpenAI-compatible AI gateway.
#[derive(Parser, Debug)]
#[command(name = "tollgate-proxy", version, about)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    controller: ControllerArgs,
    #[command(flatten)]
    otel: OtelArgs,
    /// Without a subcommand, the proxy follows the controller named by `--controller`.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Following a Tollgate controller (the in-cluster mode).
#[derive(Args, Debug)]
struct ControllerArgs {
    /// Base URL of the controller's snapshot endpoint, e.g. `https://tollgate-controller:8443`.
    #[arg(long, env = "TOLLGATE_CONTROLLER")]
    controller: Option<http::Uri>,
    /// PEM bundle of the CA that signed the controller's certificate.
    #[arg(long, env = "TOLLGATE_CONTROLLER_CA", requires = "controller")]
    controller_ca: Option<PathBuf>,
    /// File holding the projected ServiceAccount token (audience `tollgate-controller`); re-read on reconnect.
    #[arg(long, env = "TOLLGATE_TOKEN_FILE", requires = "controller")]
    token_file: Option<PathBuf>,
    /// How often usage is reported to the controller, e.g. `5s`.
    #[arg(long, env = "TOLLGATE_USAGE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    usage_interval: Duration,
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Address of the OpenAI-compatible API.
    #[arg(
        long,
        env = "TOLLGATE_LISTEN",
        default_value = "0.0.0.0:8080",
        global = true
    )]
    listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090",
        global = true
    )]
    admin_listen: SocketAddr,
    /// PEM certificate chain: serve TLS (with ALPN h2 and http/1.1) instead of plaintext.
    #[arg(long, env = "TOLLGATE_TLS_CERT", requires = "tls_key", global = true)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TOLLGATE_TLS_KEY", requires = "tls_cert", global = true)]
    tls_key: Option<PathBuf>,
    /// Largest request body accepted; larger gets 413.
    #[arg(long, env = "TOLLGATE_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024, global = true)]
    max_body_bytes: usize,
    /// Largest request head (request line and headers); larger gets 431.
    #[arg(long, env = "TOLLGATE_MAX_HEADER_BYTES", default_value_t = 64 * 1024, global = true)]
    max_header_bytes: usize,
    /// How long an idle client connection is kept open, e.g. `60s`. It is closed between one and two
    /// times this after its last answer; a request head not complete by then is cut too, and a
    /// request body that pauses this long gets 408.
    #[arg(long, env = "TOLLGATE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration, global = true)]
    idle_timeout: Duration,
    /// After SIGTERM/SIGINT, how long in-flight calls may take to finish, e.g. `30s`.
    #[arg(long, env = "TOLLGATE_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration, global = true)]
    drain_timeout: Duration,
    /// Where the per-call JSON access log goes.
    #[arg(long, env = "TOLLGATE_ACCESS_LOG", default_value = "stdout", value_parser = ["stdout", "off"], global = true)]
    access_log: String,
    /// Diagnostic log filter (stderr), e.g. `info` or `tollgate_proxy=debug`.
    #[arg(long, env = "TOLLGATE_LOG", default_value = "info", global = true)]
    log: String,
    /// Redis for cluster-wide limits and budgets, e.g. `redis://redis:6379/0`, or
    /// `rediss://redis:6380/0` for TLS. Without it (or while it is unreachable) each replica enforces
    /// its share of every limit. It may carry `user:password@`; it is never printed.
    #[arg(
        long,
        env = "TOLLGATE_REDIS_URL",
        hide_env_values = true,
        global = true
    )]
    redis_url: Option<String>,
    /// The Redis ACL user to log in as (instead of the URL's).
    #[arg(long, env = "TOLLGATE_REDIS_USERNAME", global = true)]
    redis_username: Option<String>,
    /// A file holding the Redis password (a mounted Secret; one line, trailing newline ignored).
    #[arg(long, env = "TOLLGATE_REDIS_PASSWORD_FILE", global = true)]
    redis_password_file: Option<PathBuf>,
    /// PEM CA certificates that verify a `rediss://` server, instead of the system's roots.
    #[arg(long, env = "TOLLGATE_REDIS_CA_FILE", global = true)]
    redis_ca_file: Option<PathBuf>,
    /// Longest wait for Redis on a call before falling back to this replica's share, e.g. `100ms`.
    #[arg(long, env = "TOLLGATE_REDIS_TIMEOUT", default_value = "100ms", value_parser = parse_duration, global = true)]
    redis_timeout: Duration,
    /// Proxy replicas sharing the traffic, for local shares of limits; by default the controller's
    /// count from the snapshot (standalone mode: 1).
    #[arg(long, env = "TOLLGATE_REPLICAS", value_parser = clap::value_parser!(u32).range(1..), global = true)]
    replicas: Option<u32>,
    /// Bytes this replica's response cache may hold (routes turn caching on in `spec.cache`); with
    /// `--redis-url` entries are shared through Redis too. `0` keeps nothing locally.
    #[arg(long, env = "TOLLGATE_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024, global = true)]
    cache_max_bytes: usize,
    /// A file holding the secret all replicas share to seal MCP session ids (2025-era clients), so
    /// that a session begun on one replica continues on any other. Without it each replica makes a
    /// random key and only continues its own sessions.
    #[arg(long, env = "TOLLGATE_MCP_SESSION_SECRET_FILE", global = true)]
    mcp_session_secret_file: Option<PathBuf>,
}

/// OpenTelemetry traces over OTLP, off unless an endpoint is given. The flags fall back on the
/// standard `OTEL_*` variables; the exporter also reads `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_TRACES_HEADERS` itself.
#[derive(Args, Debug)]
struct OtelArgs {
    /// The collector's base URL, e.g. `http://otel-collector:4318` (HTTP) or `:4317` (gRPC).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,
    /// `http/protobuf` or `grpc`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "http/protobuf",
          value_parser = ["http/protobuf", "grpc"], global = true)]
    otlp_protocol: String,
    /// More headers for the collector, `key=value,key2=value2` (values percent-encoded).
    #[arg(long, global = true)]
    otlp_headers: Option<String>,
    /// A PEM file of the CA certificates an `https://` collector's certificate must chain to (only
    /// those are trusted then; without it, the public roots), over either wire.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE", global = true)]
    otlp_certificate: Option<PathBuf>,
    /// `service.name` of the spans.
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        default_value = "tollgate-proxy",
        global = true
    )]
    otel_service_name: String,
    /// More resource attributes, `key=value,key2=value2`.
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", global = true)]
    otel_resource_attributes: Option<String>,
    /// always_on, always_off, traceidratio, parentbased_always_on (the default),
    /// parentbased_always_off or parentbased_traceidratio.
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        default_value = "parentbased_always_on",
        global = true
    )]
    otel_traces_sampler: String,
    /// The ratio of the ratio samplers, from 0 to 1.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", global = true)]
    otel_traces_sampler_arg: Option<String>,
    /// Set to `true` to turn every OpenTelemetry signal off.
    #[arg(
        long,
        env = "OTEL_SDK_DISABLED",
        default_value_t = false,
        global = true
    )]
    otel_sdk_disabled: bool,
    /// `otlp` (the default: sampled calls' spans go to the collector whenever one is configured) or
    /// `none` (no traces; the caller's `traceparent` is still passed upstream).
    #[arg(long, env = "OTEL_TRACES_EXPORTER", default_value = "otlp",
          value_parser = ["otlp", "none"], global = true)]
    otel_traces_exporter: String,
    /// `otlp` (the default: the GenAI metrics go to the collector whenever one is configured) or
    /// `none`.
    #[arg(long, env = "OTEL_METRICS_EXPORTER", default_value = "otlp",
          value_parser = ["otlp", "none"], global = true)]
    otel_metrics_exporter: String,
    /// `otlp` to send every access-log line as an OTLP log record too, or `none` (the default).
    #[arg(long, env = "OTEL_LOGS_EXPORTER", default_value = "none",
          value_parser = ["otlp", "none"], global = true)]
    otel_logs_exporter: String,
    /// Milliseconds between two exports of the GenAI metrics.
    #[arg(
        long,
        env = "OTEL_METRIC_EXPORT_INTERVAL",
        default_value_t = 60_000,
        global = true
    )]
    otel_metric_export_interval: u64,
    /// Longest one export of the GenAI metrics may take, in milliseconds.
    #[arg(
        long,
        env = "OTEL_METRIC_EXPORT_TIMEOUT",
        default_value_t = 30_000,
        global = true
    )]
    otel_metric_export_timeout: u64,
}

impl OtelArgs {
    /// The trace configuration, or `None` when no endpoint is set, `OTEL_TRACES_EXPORTER=none` or
    /// the SDK is disabled.
    fn traces(&self) -> anyhow::Result<Option<TraceConfig>> {
        if self.otel_traces_exporter != "otlp" {
            return Ok(None);
        }
        let Some(target) = self.target("TRACES")? else {
            return Ok(None);
        };
        let sampler = Sampler::from_name(
            &self.otel_traces_sampler,
            self.otel_traces_sampler_arg.as_deref(),
        )?;
        Ok(Some(TraceConfig {
            endpoint: target.endpoint,
            protocol: target.protocol,
            headers: target.headers,
            service_name: target.service_name,
            resource: target.resource,
            ca_pem: target.ca_pem,
            sampler,
            ..TraceConfig::default()
        }))
    }

    /// The collector part of a signal's configuration, or `None` when neither the base endpoint nor
    /// the signal's own `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` is set, or the SDK is disabled.
    fn target(&self, signal: &str) -> anyhow::Result<Option<OtlpTarget>> {
        let own = std::env::var(format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))
            .ok()
            .filter(|e| !e.trim().is_empty());
        if self.otel_sdk_disabled || (self.otlp_endpoint.is_none() && own.is_none()) {
            return Ok(None);
        }
        let protocol = OtlpProtocol::from_name(&self.otlp_protocol)
            .context("--otlp-protocol is http/protobuf or grpc")?;
        let ca_pem = match &self.otlp_certificate {
            None => None,
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!("reading the collector's CA certificates {}", path.display())
            })?),
        };
        Ok(Some(OtlpTarget {
            ca_pem,
            // The signal's own variable wins over the base URL, as the specification says.
            endpoint: if own.is_some() {
                None
            } else {
                self.otlp_endpoint.clone()
            },
            protocol,
            headers: self
                .otlp_headers
                .as_deref()
                .map(tollgate_proxy::parse_pairs)
                .unwrap_or_default(),
            service_name: self.otel_service_name.clone(),
            resource: self
                .otel_resource_attributes
                .as_deref()
                .map(tollgate_proxy::parse_pairs)
                .unwrap_or_default(),
            ..OtlpTarget::default()
        }))
    }

    /// The GenAI metrics' export, or `None` (`OTEL_METRICS_EXPORTER=none`, or no collector).
    fn metrics(&self) -> anyhow::Result<Option<MetricsConfig>> {
        if self.otel_metrics_exporter != "otlp" {
            return Ok(None);
        }
        Ok(self.target("METRICS")?.map(|mut target| {
            target.timeout = Duration::from_millis(self.otel_metric_export_timeout.max(1));
            MetricsConfig {
                target,
                interval: Duration::from_millis(self.otel_metric_export_interval.max(1)),
                ..MetricsConfig::default()
            }
        }))
    }

    /// The access log's export as OTLP log records, or `None` (`OTEL_LOGS_EXPORTER` not `otlp`, or
    /// no collector).
    fn logs(&self) -> anyhow::Result<Option<LogsConfig>> {
        if self.otel_logs_exporter != "otlp" {
            return Ok(None);
        }
        Ok(self.target("LOGS")?.map(|target| LogsConfig {
            target,
            ..LogsConfig::default()
        }))
    }
}

/// The Redis login from the flags and the files they name, checked with the URL. Errors never quote
/// the URL or the password (clap would quote a value its parser refused, so the URL is checked here).
fn redis_login(args: &ServerArgs) -> anyhow::Result<RedisLogin> {
    let password = match &args.redis_password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the Redis password file {}", path.display()))?;
            let text = text.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(
                !text.is_empty(),
                "the Redis password file {} is empty",
                path.display()
            );
            Some(text.to_owned())
        }
        None => None,
    };
    let ca_pem = match &args.redis_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading the Redis CA file {}", path.display()))?,
        ),
        None => None,
    };
    let login = RedisLogin {
        username: args.redis_username.clone(),
        password,
        ca_pem,
    };
    match &args.redis_url {
        Some(url) => {
            redis_client(url, &login)?;
        }
        None => anyhow::ensure!(
            login.username.is_none() && login.password.is_none() && login.ca_pem.is_none(),
            "--redis-username, --redis-password-file and --redis-ca-file need --redis-url"
        ),
    }
    Ok(login)
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve from custom-resource YAML files (a file or a directory), re-reading them when they change.
    Standalone {
        /// A YAML file or a directory of them (multi-document files welcome, Secrets included).
        path: PathBuf,
        /// How often to look for changes, e.g. `1s`.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        poll_interval: Duration,
        /// Where consumer keys with `generate: true` are kept (mode 0600) and read back on restart.
        /// Default: `$XDG_STATE_HOME/tollgate/generated-keys.json`, else
        /// `$HOME/.local/state/tollgate/generated-keys.json`.
        #[arg(long, env = "TOLLGATE_GENERATED_KEYS_FILE")]
        generated_keys_file: Option<PathBuf>,
    },
}

/// `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 30s or 5m"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    })
}

fn config(args: &ServerArgs, traces: Option<TraceConfig>) -> anyhow::Result<ProxyConfig> {
    let redis_login = redis_login(args)?;
    let mcp_session_key = match &args.mcp_session_secret_file {
        Some(path) => {
            let secret = std::fs::read(path)
                .with_context(|| format!("reading the MCP session secret {}", path.display()))?;
            let secret = secret.trim_ascii();
            anyhow::ensure!(
                secret.len() >= 16,
                "the MCP session secret in {} is shorter than 16 bytes",
                path.display()
            );
            Some(tollgate_proxy::mcp_session_key(secret))
        }
        None => None,
    };
    Ok(ProxyConfig {
        traces,
        // Set by the caller from the OTLP flags, beside the traces.
        metrics: None,
        logs: None,
        mcp_session_key,
        token_clock: tollgate_proxy::Clock::system(),
        key_clock: tollgate_proxy::Clock::system(),
        listen: args.listen,
        admin_listen: args.admin_listen,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
        limits: RequestLimits {
            max_body_bytes: args.max_body_bytes,
            body_pause: args.idle_timeout,
        },
        connection: ConnectionLimits {
            max_header_bytes: args.max_header_bytes,
            idle_timeout: args.idle_timeout,
        },
        drain_timeout: args.drain_timeout,
        traffic: LimitsConfig {
            redis_url: args.redis_url.clone(),
            redis_login,
            redis_timeout: args.redis_timeout,
            replicas: args.replicas,
        },
        cache: CacheConfig {
            local_bytes: args.cache_max_bytes,
            ..CacheConfig::default()
        },
    })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // When a worker is saturated, the tasks that overflow its own queue wait in the shared one,
        // which it looks at only every few dozen tasks by default. At 256 connections on one CPU that
        // left about 15% of calls waiting 30-60 ms (p99 +51 ms over the forwarder). Looking every
        // other task serves them in turn: p99 55-59 -> 18-24 ms there, with no throughput change
        // measurable at 32 connections.
        .global_queue_interval(2)
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.server.log)
                .context("--log is not a valid filter")?,
        )
        .init();
    let access_log = match cli.server.access_log.as_str() {
        "off" => AccessLog::Discard,
        _ => AccessLog::stdout(),
    };
    let mut proxy_config = config(&cli.server, cli.otel.traces()?)?;
    proxy_config.metrics = cli.otel.metrics()?;
    proxy_config.logs = cli.otel.logs()?;
    let proxy = Proxy::new(proxy_config, access_log);
    match cli.command {
        Some(Command::Standalone {
            path,
            poll_interval,
            generated_keys_file,
        }) => {
            let keys =
                generated_keys_file.map_or_else(GeneratedKeys::default_location, GeneratedKeys::at);
            let watcher =
                Watcher::start_with_keys(&path, proxy.store(), Some(proxy.recorder()), keys)
                    .with_context(|| format!("loading {}", path.display()))?;
            tokio::spawn(watcher.run(poll_interval));
        }
        None => {
            let args = cli.controller;
            let (Some(url), Some(ca_file), Some(token_file)) =
                (args.controller, args.controller_ca, args.token_file)
            else {
                anyhow::bail!(
                    "give --controller, --controller-ca and --token-file, or the standalone subcommand"
                );
            };
            let cfg = ControllerConfig {
                url,
                ca_file,
                token_file,
                usage_interval: args.usage_interval,
            };
            let store = proxy.store();
            tokio::spawn(client::follow(cfg.clone(), move |snapshot| {
                store.store(Arc::new(snapshot))
            }));
            tokio::spawn(client::report_usage(cfg, proxy.recorder().usage.clone()));
        }
    }
    let bound = proxy.bind().await?;
    tracing::info!(
        listen = %bound.local_addr(),
        admin = %bound.admin_addr(),
        tls = cli.server.tls_cert.is_some(),
        "serving"
    );
    let recorder = bound.recorder();
    bound.serve(shutdown_signal()).await;
    recorder.flush_log();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn metrics_are_on_with_a_collector_and_logs_only_when_asked() {
        let parse = |extra: &[&str]| {
            let mut args = vec![
                "tollgate-proxy",
                "standalone",
                "x.yaml",
                "--otlp-endpoint",
                "http://collector:4318",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).unwrap()
        };
        let cli = parse(&["--otel-metric-export-interval", "250"]);
        let metrics = cli.otel.metrics().unwrap().expect("metrics on by default");
        assert_eq!(metrics.interval, Duration::from_millis(250));
        assert_eq!(metrics.target.timeout, Duration::from_secs(30));
        assert_eq!(
            metrics.target.endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert!(cli.otel.logs().unwrap().is_none(), "logs are opt-in");
        let cli = parse(&[
            "--otel-metrics-exporter",
            "none",
            "--otel-logs-exporter",
            "otlp",
        ]);
        assert!(cli.otel.metrics().unwrap().is_none());
        assert!(cli.otel.traces().unwrap().is_some(), "traces stay on");
        let metrics_only = parse(&["--otel-traces-exporter", "none"]);
        assert!(metrics_only.otel.traces().unwrap().is_none());
        assert!(metrics_only.otel.metrics().unwrap().is_some());
        let logs = cli.otel.logs().unwrap().expect("logs asked for");
        assert_eq!(logs.target.service_name, "tollgate-proxy");
        let off = Cli::try_parse_from(["tollgate-proxy", "standalone", "x.yaml"]).unwrap();
        assert!(
            off.otel.metrics().unwrap().is_none(),
            "no collector, no metrics"
        );
        assert!(Cli::try_parse_from(["tollgate-proxy", "--otel-logs-exporter", "file"]).is_err());
    }

    #[test]
    fn otel_flags_make_the_trace_configuration() {
        let cli = Cli::try_parse_from([
            "tollgate-proxy",
            "standalone",
            "x.yaml",
            "--otlp-endpoint",
            "http://collector:4317",
            "--otlp-protocol",
            "grpc",
            "--otlp-headers",
            "api-key=a%20b",
            "--otel-traces-sampler",
            "parentbased_traceidratio",
            "--otel-traces-sampler-arg",
            "0.25",
            "--otel-resource-attributes",
            "deployment.environment=prod",
        ])
        .unwrap();
        let traces = cli
            .otel
            .traces()
            .unwrap()
            .expect("an endpoint turns traces on");
        assert_eq!(traces.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(traces.protocol, OtlpProtocol::Grpc);
        assert_eq!(traces.headers, [("api-key".to_string(), "a b".to_string())]);
        assert_eq!(
            traces.sampler,
            Sampler::from_name("parentbased_traceidratio", Some("0.25")).unwrap()
        );
        assert_eq!(
            traces.resource,
            [("deployment.environment".to_string(), "prod".to_string())]
        );
        let bad = Cli::try_parse_from([
            "tollgate-proxy",
            "--otlp-endpoint",
            "http://c:4318",
            "--otel-traces-sampler",
            "sometimes",
        ])
        .unwrap();
        assert!(bad.otel.traces().is_err());
    }

    #[test]
    fn the_collectors_ca_file_is_read_for_every_signal_and_a_missing_one_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let parse = |path: &std::path::Path| {
            Cli::try_parse_from([
                "tollgate-proxy".as_ref(),
                "standalone".as_ref(),
                "x.yaml".as_ref(),
                "--otlp-endpoint".as_ref(),
                "https://collector:4318".as_ref(),
                "--otel-logs-exporter".as_ref(),
                "otlp".as_ref(),
                "--otlp-certificate".as_ref(),
                path.as_os_str(),
            ])
            .unwrap()
        };
        let cli = parse(&ca);
        let pem = Some("-----BEGIN CERTIFICATE-----\n");
        assert_eq!(cli.otel.traces().unwrap().unwrap().ca_pem.as_deref(), pem);
        assert_eq!(
            cli.otel
                .metrics()
                .unwrap()
                .unwrap()
                .target
                .ca_pem
                .as_deref(),
            pem
        );
        assert_eq!(
            cli.otel.logs().unwrap().unwrap().target.ca_pem.as_deref(),
            pem
        );
        let error = parse(&dir.path().join("absent.crt"))
            .otel
            .traces()
            .unwrap_err();
        assert!(format!("{error:#}").contains("absent.crt"), "{error:#}");
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
