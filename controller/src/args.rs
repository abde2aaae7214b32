//! Command-line flags (each also readable from an environment variable, for the Helm chart).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

/// Tollgate's controller: watches Tollgate resources, compiles snapshots, streams them to proxies.
#[derive(Parser, Debug, Clone)]
#[command(name = "tollgate-controller", version)]
pub struct Args {
    /// Address of the HTTPS endpoint proxies connect to (`/v1/snapshots`, `/v1/usage`).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP admin endpoint (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// PEM certificate chain served to proxies.
    #[arg(long, env = "TOLLGATE_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TOLLGATE_TLS_KEY")]
    pub tls_key: PathBuf,

    /// A ServiceAccount allowed to receive snapshots, as `namespace:name`. Repeatable.
    #[arg(long = "allowed-proxy-sa", value_name = "NS:NAME", value_parser = parse_service_account, required = true)]
    pub allowed_proxy_sas: Vec<ServiceAccount>,

    /// Audience proxies' tokens must be issued for.
    #[arg(
        long,
        env = "TOLLGATE_TOKEN_AUDIENCE",
        default_value = "tollgate-controller"
    )]
    pub audience: String,

    /// Watch only these namespaces (repeatable). Default: every namespace.
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tollgate-system")]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, default_value = "tollgate-controller")]
    pub lease_name: String,

    /// How long a leader holds the Lease without renewing it before another replica may take over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// This replica's name in the Lease (default: `$POD_NAME`, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Quiet time after a change before compiling, so a burst compiles once.
    #[arg(long, default_value = "25ms", value_parser = parse_duration)]
    pub debounce: Duration,

    /// Longest a continuous stream of changes may delay a compile.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub debounce_max: Duration,

    /// Gap between two heartbeat frames on an idle snapshot stream.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// How often the leader writes accumulated usage to `ApiSubscription.status.usage`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub usage_flush: Duration,

    /// How long a TokenReview answer is reused.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub token_cache_ttl: Duration,

    /// Serve the portal (catalog, access requests, approvals) on this plain-HTTP address. Off when unset.
    #[arg(long, env = "TOLLGATE_PORTAL_LISTEN")]
    pub portal_listen: Option<SocketAddr>,

    /// A file whose bytes (32 or more) key the portal's session cookies, so every replica opens the
    /// cookies of every other. Unset: a random key per process (sessions end when it restarts).
    #[arg(long, env = "TOLLGATE_PORTAL_SESSION_KEY_FILE")]
    pub portal_session_key_file: Option<PathBuf>,

    /// The proxy's public base URL, shown in the portal's code samples.
    #[arg(
        long,
        env = "TOLLGATE_PORTAL_PROXY_BASE_URL",
        default_value = "http://localhost:8080"
    )]
    pub portal_proxy_base_url: String,

    /// The proxy's address inside the cluster, plain HTTP (e.g. `http://tollgate-proxy.tollgate.svc:8080`),
    /// for the API page's try-it form: the portal sends the call for the person, because its CSP keeps
    /// the browser from reaching another origin. The form is off when unset.
    #[arg(long, env = "TOLLGATE_PORTAL_TRY_IT_URL")]
    pub portal_try_it_url: Option<String>,

    /// How long a portal session lasts after sign-in.
    #[arg(long, default_value = "8h", value_parser = parse_duration)]
    pub portal_session_ttl: Duration,

    /// Mark session cookies `Secure` (set when the portal is reached over HTTPS, e.g. through a TLS
    /// Ingress). Requests forwarded with `X-Forwarded-Proto: https` get `Secure` cookies anyway.
    #[arg(long, env = "TOLLGATE_PORTAL_SECURE_COOKIE")]
    pub portal_secure_cookie: bool,

    /// Traces over OTLP (off unless a collector is named).
    #[command(flatten)]
    pub otel: crate::trace::OtelArgs,
}

impl Args {
    /// The identity written into the Lease.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "tollgate-controller".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// A ServiceAccount named on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccount {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceAccount {
    /// The user name the API server gives its tokens: `system:serviceaccount:<ns>:<name>`.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

fn parse_service_account(text: &str) -> Result<ServiceAccount, String> {
    match text.split_once(':') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains(':') => {
            Ok(ServiceAccount {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(format!("expected NAMESPACE:NAME, got {text:?}")),
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`, or a combination such as `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as 250ms, 5s or 1m30s, got {text:?}");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return Err(bad()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("25ms"), Ok(Duration::from_millis(25)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn service_accounts() {
        let sa = parse_service_account("tollgate-system:proxy").unwrap();
        assert_eq!(sa.username(), "system:serviceaccount:tollgate-system:proxy");
        assert!(parse_service_account("proxy").is_err());
        assert!(parse_service_account(":proxy").is_err());
        assert!(parse_service_account("a:b:c").is_err());
    }
}
