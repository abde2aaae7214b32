//! Starting etcd and kube-apiserver, and handing out ways to talk to them.

use std::{
    fmt::Write as _,
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{aggregation, pki, supervisor};

/// The Kubernetes version `ensure.sh` builds; tests may assert on it.
pub const KUBERNETES_VERSION: &str = "v1.34.4";

/// How long a cold start may take before the harness gives up (typically a few seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Start attempts when a picked port is taken by someone else between picking and binding.
const START_ATTEMPTS: usize = 3;
/// Log files in the scratch directory.
const ETCD_LOG: &str = "etcd.log";
const APISERVER_LOG: &str = "kube-apiserver.log";
/// Lines of each log shown when startup fails.
const LOG_TAIL_LINES: usize = 40;

/// A real etcd + kube-apiserver on loopback, with TLS everywhere and RBAC on.
///
/// There is no kubelet, scheduler or controller-manager: objects are stored, validated,
/// admitted and authorized for real, but nothing reconciles them (no pods run, no namespace
/// is ever finalized, no default ServiceAccount appears unless [`ControlPlane::namespace`]
/// makes one). The one controller job RBAC tests cannot do without, ClusterRole aggregation,
/// the harness does itself: see [`ControlPlane::aggregate_cluster_roles`].
pub struct ControlPlane {
    bin_dir: PathBuf,
    work_dir: PathBuf,
    server_url: String,
    ca_pem: String,
    ca_cert: PathBuf,
    service_account_private: PathBuf,
    /// Serving certificate and key for the node's kubelet and metrics-server.
    node_serving: (PathBuf, PathBuf),
    kubeconfig: PathBuf,
    etcd_log: PathBuf,
    apiserver_log: PathBuf,
    /// Held so the processes are never reaped behind the supervisor's back.
    children: Mutex<Vec<Child>>,
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// Where the API server listens, and the names its certificate carries beyond loopback.
///
/// The shared control plane listens on loopback only. A cluster whose pods reach the API server
/// (through the `kubernetes` Service) needs it on an address the pods can route to, and named in
/// its certificate as the Service's IP and DNS names.
#[derive(Clone)]
pub struct Exposure {
    /// The address it binds to and advertises (the `kubernetes` Service's endpoint).
    pub address: std::net::Ipv4Addr,
    /// More names for the serving certificate.
    pub names: Vec<String>,
}

/// Ports picked for one start attempt.
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

/// Why a start attempt failed, and whether another attempt could help.
struct AttemptError {
    error: anyhow::Error,
    port_clash: bool,
}

impl ControlPlane {
    /// The control plane of this test binary, started on first use and torn down at exit.
    ///
    /// Panics (in every test that asks, not only the first) if it cannot be started.
    pub fn shared() -> &'static ControlPlane {
        let started = SHARED.get_or_init(|| {
            let begun = Instant::now();
            let result = Self::start().map_err(|e| format!("{e:#}"));
            if let Ok(cp) = &result {
                eprintln!(
                    "[tollgate-e2e] control plane ready at {} in {:.1}s (work dir {})",
                    cp.server_url,
                    begun.elapsed().as_secs_f64(),
                    cp.work_dir.display()
                );
            }
            result
        });
        match started {
            Ok(cp) => cp,
            Err(why) => panic!("the test control plane did not start:\n{why}"),
        }
    }

    fn start() -> Result<Self> {
        Self::start_exposed(None)
    }

    /// A control plane of the caller's own, listening where `exposure` says (loopback if `None`);
    /// with an exposure, the API server also keeps the `kubernetes` Service's endpoints.
    /// Its processes and scratch directory go when the test process exits.
    pub fn start_exposed(exposure: Option<Exposure>) -> Result<Self> {
        let bin_dir = ensure_binaries()?;
        supervisor::sweep_stale_dirs();
        let work_dir = supervisor::scratch_dir().context("creating the scratch directory")?;
        let names = exposure.as_ref().map_or_else(Vec::new, |e| {
            let mut names = vec![e.address.to_string()];
            names.extend(e.names.iter().cloned());
            names
        });
        let pki = pki::generate(&work_dir, &names)?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&bin_dir, &work_dir, &pki, exposure.as_ref()) {
                Ok(cp) => return Ok(cp),
                Err(AttemptError {
                    error,
                    port_clash: true,
                }) => last_error = Some(error),
                Err(AttemptError { error, .. }) => {
                    last_error = Some(error);
                    break;
                }
            }
        }
        // Leave the logs the error message points at.
        supervisor::keep_dir(&work_dir);
        Err(last_error.unwrap_or_else(|| anyhow!("no start attempt was made")))
    }

    fn start_once(
        bin_dir: &Path,
        work_dir: &Path,
        pki: &pki::Pki,
        exposure: Option<&Exposure>,
    ) -> Result<Self, AttemptError> {
        let fatal = |error: anyhow::Error| AttemptError {
            error,
            port_clash: false,
        };
        let ports = free_ports().map_err(fatal)?;
        let etcd_log = work_dir.join(ETCD_LOG);
        let apiserver_log = work_dir.join(APISERVER_LOG);
        let host = exposure.map_or("127.0.0.1".to_owned(), |e| e.address.to_string());
        let server_url = format!("https://{host}:{}", ports.apiserver);
        let kubeconfig = work_dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &server_url, pki).map_err(fatal)?;

        let mut children = Vec::new();
        let ready = launch_and_wait(
            bin_dir,
            work_dir,
            pki,
            &ports,
            exposure,
            &kubeconfig,
            &mut children,
        );

        if let Err(error) = ready {
            let port_clash = [&etcd_log, &apiserver_log]
                .iter()
                .any(|log| read_lossy(log).contains("address already in use"));
            for (_, child, _) in &mut children {
                supervisor::kill(child);
            }
            let mut report = format!("{error:#}\n");
            for log in [&etcd_log, &apiserver_log] {
                let _ = write!(
                    report,
                    "\n--- last lines of {} ---\n{}",
                    log.display(),
                    tail(log)
                );
            }
            return Err(AttemptError {
                error: anyhow!(report),
                port_clash,
            });
        }

        Ok(ControlPlane {
            bin_dir: bin_dir.to_owned(),
            work_dir: work_dir.to_owned(),
            server_url,
            ca_pem: pki.ca_pem.clone(),
            ca_cert: pki.ca_cert.clone(),
            service_account_private: pki.service_account_private.clone(),
            node_serving: (pki.node_serving.cert.clone(), pki.node_serving.key.clone()),
            kubeconfig,
            etcd_log,
            apiserver_log,
            children: Mutex::new(children.into_iter().map(|(_, c, _)| c).collect()),
        })
    }

    /// Certificate and key (PEM files) serving the node's kubelet and metrics-server, signed by the CA;
    /// they name loopback, the exposure's names and metrics-server's Service.
    pub fn node_serving_cert(&self) -> (&Path, &Path) {
        (&self.node_serving.0, &self.node_serving.1)
    }

    /// Kubeconfig of the admin user (`system:masters`), with the CA and client cert as files.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Where etcd, kube-apiserver, kubectl and helm are.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The API server's base URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The PEM of the CA that signed the API server's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The file holding that CA's certificate.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_cert
    }

    /// The key that signs service-account tokens (the controller-manager's token controller uses it).
    pub fn service_account_key_path(&self) -> &Path {
        &self.service_account_private
    }

    /// The scratch directory (certificates, logs, etcd data); removed at exit.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The etcd log file.
    pub fn etcd_log(&self) -> &Path {
        &self.etcd_log
    }

    /// The kube-apiserver log file.
    pub fn apiserver_log(&self) -> &Path {
        &self.apiserver_log
    }

    /// Process ids of etcd and kube-apiserver, for tests that check teardown.
    pub fn process_ids(&self) -> Vec<u32> {
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.iter().map(Child::id).collect()
    }

    /// `kubectl` as the admin.
    pub fn kubectl(&self) -> Command {
        kubectl_command(&self.bin_dir, &self.kubeconfig)
    }

    /// `kubectl` impersonating `user` (with `groups`, plus `system:authenticated` which the
    /// API server always adds).
    pub fn kubectl_as(&self, user: &str, groups: &[&str]) -> Command {
        let mut cmd = self.kubectl();
        cmd.arg(format!("--as={user}"));
        for group in groups {
            cmd.arg(format!("--as-group={group}"));
        }
        cmd
    }

    /// `helm` as the admin, with its cache, config and data kept in the scratch directory.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("helm"));
        let home = self.work_dir.join("helm");
        cmd.env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        cmd
    }

    /// A `kube::Config` for the admin, for tests that need to adjust it before building a client.
    pub async fn kube_config(&self) -> kube::Config {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("reading the kubeconfig");
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("loading the kubeconfig")
    }

    /// A client authenticated as the admin (`system:masters`).
    ///
    /// A client belongs to the tokio runtime it was made on: make one per test.
    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config().await).expect("building the admin client")
    }

    /// A client that impersonates `user` in `groups`, so RBAC and admission see that user.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        let mut config = self.kube_config().await;
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups =
            (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
        kube::Client::try_from(config).expect("building an impersonating client")
    }
}

/// A kubectl command with the kubeconfig preset and a private discovery cache.
pub(crate) fn kubectl_command(bin_dir: &Path, kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(bin_dir.join("kubectl"));
    // Without this, every run would leave a discovery cache per random port under ~/.kube.
    let cache = kubeconfig.with_file_name("kubectl-cache");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache);
    cmd
}

/// Runs `ensure.sh` (a no-op once everything is cached) and returns the bin directory.
fn ensure_binaries() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/ensure.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let bin_dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    for tool in ["etcd", "kube-apiserver", "kubectl", "helm"] {
        if !bin_dir.join(tool).is_file() {
            bail!(
                "{} did not provide {tool} in {}",
                script.display(),
                bin_dir.display()
            );
        }
    }
    Ok(bin_dir)
}

/// Three distinct free loopback ports. Another process may take one before we bind it;
/// the caller retries when the logs say so.
fn free_ports() -> Result<Ports> {
    let listeners = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free ports")?;
    let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
    Ok(Ports {
        etcd_client: port(0)?,
        etcd_peer: port(1)?,
        apiserver: port(2)?,
    })
}

fn etcd_command(bin_dir: &Path, work_dir: &Path, pki: &pki::Pki, ports: &Ports) -> Result<Command> {
    let client_url = format!("https://127.0.0.1:{}", ports.etcd_client);
    let peer_url = format!("https://127.0.0.1:{}", ports.etcd_peer);
    let data_dir = work_dir.join("etcd-data");
    // A retried attempt must not find the half-made member of the previous one.
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).context("clearing the etcd data directory")?;
    }
    let mut cmd = Command::new(bin_dir.join("etcd"));
    cmd.arg("--name=tollgate-e2e")
        .arg(flag("data-dir", &data_dir))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=tollgate-e2e={peer_url}"))
        .arg("--initial-cluster-state=new")
        .arg(flag("cert-file", &pki.etcd.cert))
        .arg(flag("key-file", &pki.etcd.key))
        .arg(flag("trusted-ca-file", &pki.ca_cert))
        .arg("--client-cert-auth=true")
        .arg(flag("peer-cert-file", &pki.etcd.cert))
        .arg(flag("peer-key-file", &pki.etcd.key))
        .arg(flag("peer-trusted-ca-file", &pki.ca_cert))
        .arg("--peer-client-cert-auth=true")
        // The data is thrown away at exit; durability only costs time.
        .arg("--unsafe-no-fsync=true")
        // At info, etcd's log would bury the lines that explain a failed start.
        .arg("--log-level=warn");
    Ok(cmd)
}

fn apiserver_command(
    bin_dir: &Path,
    work_dir: &Path,
    pki: &pki::Pki,
    ports: &Ports,
    exposure: Option<&Exposure>,
) -> Command {
    let issuer = "https://kubernetes.default.svc";
    let address = exposure.map_or("127.0.0.1".to_owned(), |e| e.address.to_string());
    let mut cmd = Command::new(bin_dir.join("kube-apiserver"));
    cmd.arg(format!("--bind-address={address}"))
        .arg(format!("--advertise-address={address}"))
        .arg(format!("--secure-port={}", ports.apiserver))
        .arg(flag("cert-dir", &work_dir.join("apiserver-certs")))
        .arg(flag("tls-cert-file", &pki.apiserver_serving.cert))
        .arg(flag("tls-private-key-file", &pki.apiserver_serving.key))
        .arg(flag("client-ca-file", &pki.ca_cert))
        .arg(format!(
            "--etcd-servers=https://127.0.0.1:{}",
            ports.etcd_client
        ))
        .arg(flag("etcd-cafile", &pki.ca_cert))
        .arg(flag("etcd-certfile", &pki.apiserver_etcd_client.cert))
        .arg(flag("etcd-keyfile", &pki.apiserver_etcd_client.key))
        .arg("--authorization-mode=RBAC")
        .arg(format!("--service-account-issuer={issuer}"))
        .arg(flag(
            "service-account-key-file",
            &pki.service_account_public,
        ))
        .arg(flag(
            "service-account-signing-key-file",
            &pki.service_account_private,
        ))
        .arg(format!("--api-audiences={issuer}"))
        .arg("--service-cluster-ip-range=10.96.0.0/16")
        .arg("--profiling=false");
    if exposure.is_none() {
        // Nothing ever serves the `kubernetes` Service's endpoints; skip maintaining them.
        cmd.arg("--endpoint-reconciler-type=none");
    } else {
        // The aggregation layer, for metrics-server behind an APIService: the API server proxies to it
        // with the front-proxy client certificate and names the caller in these headers; it dials the
        // Service's endpoint directly rather than its cluster IP (no kube-proxy needed on this path).
        cmd.arg(flag("requestheader-client-ca-file", &pki.front_proxy_ca))
            .arg("--requestheader-allowed-names=front-proxy-client")
            .arg("--requestheader-username-headers=X-Remote-User")
            .arg("--requestheader-group-headers=X-Remote-Group")
            .arg("--requestheader-extra-headers-prefix=X-Remote-Extra-")
            .arg(flag("proxy-client-cert-file", &pki.front_proxy_client.cert))
            .arg(flag("proxy-client-key-file", &pki.front_proxy_client.key))
            .arg("--enable-aggregator-routing=true");
    }
    cmd
}

fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

/// A started process, its name and its log file.
type Running = (&'static str, Child, PathBuf);

/// Starts etcd and kube-apiserver together (the API server retries etcd until it answers),
/// waits until the API server is ready and fills the aggregated ClusterRoles. `children` gets whatever was started, even on error.
fn launch_and_wait(
    bin_dir: &Path,
    work_dir: &Path,
    pki: &pki::Pki,
    ports: &Ports,
    exposure: Option<&Exposure>,
    kubeconfig: &Path,
    children: &mut Vec<Running>,
) -> Result<()> {
    let etcd_log = work_dir.join(ETCD_LOG);
    let etcd = launch(etcd_command(bin_dir, work_dir, pki, ports)?, &etcd_log)?;
    children.push(("etcd", etcd, etcd_log));
    let apiserver_log = work_dir.join(APISERVER_LOG);
    let apiserver = launch(
        apiserver_command(bin_dir, work_dir, pki, ports, exposure),
        &apiserver_log,
    )?;
    children.push(("kube-apiserver", apiserver, apiserver_log));
    wait_ready(bin_dir, kubeconfig, children)?;
    // Without this, binding `admin`, `edit` or `view` would grant nothing.
    aggregation::aggregate(bin_dir, kubeconfig)
}

/// Starts a command under the supervisor with stdout and stderr going to `log`.
fn launch(mut cmd: Command, log: &Path) -> Result<Child> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let program = cmd.get_program().to_string_lossy().into_owned();
    supervisor::spawn(cmd).with_context(|| format!("starting {program}"))
}

/// Polls `/readyz` through kubectl (which also proves the kubeconfig works) until the API
/// server says ok, a process dies, or the deadline passes.
fn wait_ready(bin_dir: &Path, kubeconfig: &Path, children: &mut [Running]) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for (name, child, log) in children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                supervisor::forget(child.id());
                bail!(
                    "{name} exited during startup ({status}); log: {}",
                    log.display()
                );
            }
        }
        let probe = kubectl_command(bin_dir, kubeconfig)
            .args(["get", "--raw=/readyz", "--request-timeout=5s"])
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")?;
        if probe.status.success() && String::from_utf8_lossy(&probe.stdout).trim() == "ok" {
            return Ok(());
        }
        let last_answer = format!(
            "{}{}",
            String::from_utf8_lossy(&probe.stdout),
            String::from_utf8_lossy(&probe.stderr)
        );
        if Instant::now() >= deadline {
            bail!(
                "kube-apiserver not ready after {}s; last /readyz answer:\n{}",
                READY_TIMEOUT.as_secs(),
                last_answer.trim()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn write_kubeconfig(path: &Path, server_url: &str, pki: &pki::Pki) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "tollgate-e2e",
            "cluster": { "server": server_url, "certificate-authority": pki.ca_cert },
        }],
        "users": [{
            "name": "tollgate-admin",
            "user": { "client-certificate": pki.admin.cert, "client-key": pki.admin.key },
        }],
        "contexts": [{
            "name": "tollgate-e2e",
            "context": { "cluster": "tollgate-e2e", "user": "tollgate-admin" },
        }],
        "current-context": "tollgate-e2e",
    });
    let yaml = serde_yaml::to_string(&config)?;
    std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

fn tail(path: &Path) -> String {
    let text = read_lossy(path);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
