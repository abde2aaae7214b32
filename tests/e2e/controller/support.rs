//! Running the real `tollgate-controller` and `tollgate-proxy` binaries against the test control plane.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tollgate_e2e::{ControlPlane, Process, TestNamespace, free_port, run, tollgate_binaries};

use crate::http;

/// The audience proxies' tokens are issued for.
pub const AUDIENCE: &str = "tollgate-controller";
/// The allowed proxies' ServiceAccount.
pub const PROXY_SA: &str = "tollgate-proxy";
/// A ServiceAccount that exists but is not allowed.
pub const OTHER_SA: &str = "someone-else";
/// Lease duration the controllers run with in these tests.
pub const LEASE: Duration = Duration::from_secs(4);

/// A namespace with what controllers and proxies need: TLS files, ServiceAccounts and their tokens.
pub struct Setup {
    pub cp: &'static ControlPlane,
    pub ns: TestNamespace,
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// Token of the allowed proxy ServiceAccount, audience `tollgate-controller`.
    pub proxy_token: PathBuf,
}

impl Setup {
    pub fn new(prefix: &str) -> Self {
        let cp = ControlPlane::shared_with_tollgate_api();
        let ns = cp.namespace(prefix);
        // These tests publish routes anywhere (`/demo`, `/chat`): the administrator's grant of every path.
        ns.annotate("tollgate.dev/path-prefixes", "/");
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca, cert, key) = tls_files(dir.path());
        let accounts = format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {PROXY_SA}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {OTHER_SA}\n"
        );
        ns.apply_yaml(&accounts).expect("ServiceAccounts");
        let mut setup = Self {
            cp,
            ns,
            proxy_token: PathBuf::new(),
            dir,
            ca,
            cert,
            key,
        };
        setup.proxy_token = setup.token_file(PROXY_SA, Some(AUDIENCE), "proxy.token");
        setup
    }

    /// A TokenRequest for `account` written to a file, as a projected token volume would hold it.
    pub fn token_file(&self, account: &str, audience: Option<&str>, file: &str) -> PathBuf {
        let token = self.cp.create_token(self.ns.name(), account, audience);
        let path = self.dir.path().join(file);
        std::fs::write(&path, token).expect("writing the token");
        path
    }

    /// Applies YAML into the namespace, panicking with kubectl's message on failure.
    pub fn apply(&self, yaml: &str) {
        if let Err(e) = self.ns.apply_yaml(yaml) {
            panic!("kubectl apply failed: {e}\n{yaml}");
        }
    }

    /// `kubectl` in this namespace.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.cp.kubectl();
        cmd.args(["-n", self.ns.name()]).args(args);
        run(cmd)
    }

    /// One field of an object through a JSONPath.
    pub fn jsonpath(&self, resource: &str, path: &str) -> String {
        self.kubectl(&["get", resource, "-o", &format!("jsonpath={path}")])
            .unwrap_or_default()
    }

    /// Starts a controller watching this namespace only, with its Lease here too.
    pub async fn controller(&self, name: &str) -> Controller {
        self.start_controller(name, None, &[], &[]).await
    }

    /// Starts a controller watching this namespace, with more flags.
    pub async fn controller_with_args(&self, name: &str, extra: &[String]) -> Controller {
        self.start_controller(name, None, &[], extra).await
    }

    /// Starts a controller watching this namespace and `others` too.
    pub async fn controller_watching(&self, name: &str, others: &[&str]) -> Controller {
        self.start_controller(name, None, others, &[]).await
    }

    /// Starts a controller on a given snapshot port with more flags (for proxies started before it).
    pub async fn controller_on_with_args(
        &self,
        name: &str,
        port: u16,
        extra: &[String],
    ) -> Controller {
        self.start_controller(name, Some(port), &[], extra).await
    }

    /// Starts a controller on a given snapshot port (to restart one where proxies expect it).
    pub async fn controller_on(&self, name: &str, port: u16) -> Controller {
        self.start_controller(name, Some(port), &[], &[]).await
    }

    async fn start_controller(
        &self,
        name: &str,
        fixed_port: Option<u16>,
        others: &[&str],
        extra: &[String],
    ) -> Controller {
        for attempt in 1..=START_ATTEMPTS {
            let port = fixed_port.unwrap_or_else(free_port);
            let admin = free_port();
            let mut cmd = Command::new(tollgate_binaries().join("tollgate-controller"));
            cmd.env("KUBECONFIG", self.cp.kubeconfig_path())
                .env("RUST_LOG", "info,kube=warn,tollgate_controller=debug")
                .env_remove("POD_NAMESPACE")
                .env_remove("POD_NAME")
                .arg(format!("--listen=127.0.0.1:{port}"))
                .arg(format!("--admin-listen=127.0.0.1:{admin}"))
                .arg(format!("--tls-cert={}", self.cert.display()))
                .arg(format!("--tls-key={}", self.key.display()))
                .arg(format!("--allowed-proxy-sa={}:{PROXY_SA}", self.ns.name()))
                .arg(format!("--namespace={}", self.ns.name()))
                .arg(format!("--lease-namespace={}", self.ns.name()))
                .arg(format!("--lease-duration={}s", LEASE.as_secs()))
                .arg(format!("--identity={name}"))
                .arg("--usage-flush=1s")
                .arg("--heartbeat=2s")
                .args(others.iter().map(|ns| format!("--namespace={ns}")))
                .args(extra);
            let mut process = Process::spawn(name, cmd);
            // Ready means both ports are bound, every watch has listed, and a snapshot exists.
            let url = format!("http://127.0.0.1:{admin}/readyz");
            match wait_answering(&mut process, &url).await {
                Ok(()) => {
                    return Controller {
                        process,
                        port,
                        admin,
                    };
                }
                Err(log) if log.contains(ADDRESS_IN_USE) && attempt < START_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(log) => panic!("{name} exited:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts a proxy following the controller on `controller_port` with the token in `token`.
    pub async fn proxy(&self, name: &str, controller_port: u16, token: &Path) -> Proxy {
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let admin = free_port();
            let mut cmd = Command::new(tollgate_binaries().join("tollgate-proxy"));
            cmd.arg(format!("--listen=127.0.0.1:{port}"))
                .arg(format!("--admin-listen=127.0.0.1:{admin}"))
                .arg("--access-log=off")
                .arg(format!("--controller=https://127.0.0.1:{controller_port}"))
                .arg(format!("--controller-ca={}", self.ca.display()))
                .arg(format!("--token-file={}", token.display()))
                .arg("--usage-interval=1s");
            let mut process = Process::spawn(name, cmd);
            // /healthz answers once both listeners are bound, snapshot or not.
            let url = format!("http://127.0.0.1:{admin}/healthz");
            match wait_answering(&mut process, &url).await {
                Ok(()) => {
                    return Proxy {
                        process,
                        port,
                        admin,
                    };
                }
                Err(log) if log.contains(ADDRESS_IN_USE) && attempt < START_ATTEMPTS => {}
                Err(log) => panic!("{name} exited:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

/// Start attempts when a port picked as free was taken in the meantime (outgoing connections of
/// other processes draw from the same range).
const START_ATTEMPTS: usize = 5;
const ADDRESS_IN_USE: &str = "Address already in use";

/// Waits until `url` answers 200; `Err` with the log if the process exits first.
async fn wait_answering(process: &mut Process, url: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(http::get(url).await, Ok((200, _))) {
            return Ok(());
        }
        if !process.running() {
            // Let the log reader catch up with the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(process.log());
        }
        assert!(
            Instant::now() < deadline,
            "{} never answered {url}:\n{}",
            process.name,
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running controller.
pub struct Controller {
    pub process: Process,
    /// Snapshot (TLS) port.
    pub port: u16,
    /// Admin port.
    pub admin: u16,
}

impl Controller {
    /// One metric's value (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        let Ok((200, text)) = http::get(&url).await else {
            return 0.0;
        };
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// A running proxy.
pub struct Proxy {
    pub process: Process,
    /// OpenAI-compatible API port.
    pub port: u16,
    /// Admin port.
    pub admin: u16,
}

impl Proxy {
    /// Whether `/readyz` says ready.
    pub async fn ready(&self) -> bool {
        matches!(
            http::get(&format!("http://127.0.0.1:{}/readyz", self.admin)).await,
            Ok((200, _))
        )
    }

    /// Waits for readiness (the first snapshot).
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ready().await {
            assert!(
                self.process.running(),
                "{} exited:\n{}",
                self.process.name,
                self.process.log()
            );
            assert!(
                Instant::now() < deadline,
                "{} never became ready:\n{}",
                self.process.name,
                self.process.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A JSON `POST` to `path` with `key`: status and body.
    pub async fn post(&self, path: &str, key: &str, body: &serde_json::Value) -> (u16, String) {
        http::Http::new()
            .post(self.port, path, key, body)
            .await
            .unwrap_or((0, "connection failed".into()))
    }

    /// A chat completion on `prefix` with `key`: status and body.
    pub async fn chat(&self, prefix: &str, key: &str, model: &str) -> (u16, String) {
        http::chat(self.port, prefix, key, model)
            .await
            .unwrap_or((0, "connection failed".into()))
    }
}

/// A CA and a serving certificate for 127.0.0.1 and localhost, as files.
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    (
        write("ca.pem", &ca_pem),
        write("tls.crt", &cert.pem()),
        write("tls.key", &key.serialize_pem()),
    )
}

/// Percentile (0–100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
