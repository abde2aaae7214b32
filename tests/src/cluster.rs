//! A one-node Kubernetes cluster from real parts, on a bridge the harness makes and removes.
//!
//! Next to the control plane's etcd and kube-apiserver it runs kube-controller-manager,
//! kube-scheduler, kube-proxy (iptables), CoreDNS and the kubelet as host processes, and containerd
//! with runc and the CNI bridge plugin from Debian for the pods. The images come from
//! `scripts/images.sh` (built by buildah from the Dockerfiles) and are imported into containerd
//! directly; nothing is pulled. Everything listens on loopback or on the bridge `tollgate0`
//! (10.88.0.1/16, the pods' network), and a FORWARD rule keeps pods' packets on this machine.
//!
//! [`Cluster`]'s `Drop` stops every process, kills the containers, unmounts what the kubelet and
//! containerd mounted, deletes the network namespaces, the bridge, kube-proxy's rules and ours, and
//! restores the sysctls it changed, whether the test passed or not. A run that was killed leaves
//! that state behind: the next start removes the bridge and the rules before it begins.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

mod host;

use self::host::{
    iptables, make_bridge, mounts_under, netns_names, processes_whose_cmdline_has,
    remove_pod_cgroups, run, stop, sweep_network,
};
use crate::{
    command::{run_combined, run_with_stdin},
    controlplane::{ControlPlane, Exposure},
    supervisor,
    workspace::repo_root,
};

/// The bridge the pods hang off, and the host's address on it (API server, kubelet, DNS).
pub const BRIDGE: &str = "tollgate0";
/// The host's address on [`BRIDGE`].
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
/// The pods' network.
const POD_CIDR: &str = "10.88.0.0/16";
/// The node's name in the API.
pub const NODE_NAME: &str = "tollgate-node";
/// The `kubernetes` Service's address in the control plane's service range.
const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// How long the node may take to report Ready after the kubelet starts.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Marks the iptables rules this harness adds, so a later run can find and remove them.
const RULE_COMMENT: &str = "tollgate-e2e cluster";
/// Lines of each log shown when the cluster fails to start.
const LOG_TAIL_LINES: usize = 30;

/// An image built by `scripts/images.sh`.
#[derive(Clone, Debug)]
pub struct Image {
    /// `proxy` or `controller`.
    pub name: String,
    /// `localhost/tollgate-<name>`.
    pub repository: String,
    /// The tag: a hash of the image's inputs.
    pub tag: String,
    /// The docker-archive it was imported from.
    pub archive: PathBuf,
    /// Its size: the bytes of its one layer, uncompressed.
    pub bytes: u64,
}

/// How long each part of the start took, for the test log.
#[derive(Debug, Default)]
pub struct StartTimes {
    /// `tests/cluster/ensure.sh` (the Kubernetes node binaries, CoreDNS, pause, Debian packages).
    pub binaries: Duration,
    /// `scripts/images.sh` (cargo build of the binaries, buildah).
    pub images: Duration,
    /// etcd and kube-apiserver ready.
    pub control_plane: Duration,
    /// containerd up and the images imported.
    pub runtime: Duration,
    /// From starting the node's processes to the Node's Ready condition.
    pub node_ready: Duration,
}

/// A one-node cluster; torn down when dropped. See the module documentation.
pub struct Cluster {
    cp: ControlPlane,
    bin_dir: PathBuf,
    work: PathBuf,
    containerd_socket: PathBuf,
    images: Vec<Image>,
    /// Started processes in start order, with their names and log files; stopped in reverse.
    processes: Vec<(&'static str, Child, PathBuf)>,
    /// Network namespaces that existed before: the others are the pods'.
    netns_before: BTreeSet<String>,
    /// Sysctls changed, with the values to put back.
    sysctls: Vec<(PathBuf, String)>,
    /// Whether the teardown has run.
    stopped: bool,
    /// How long the start took.
    pub times: StartTimes,
}

impl Cluster {
    /// Builds what is missing, starts every part and waits for the Node to be Ready.
    /// Panics with the tails of the logs if that fails (after tearing down what was started).
    pub fn start() -> Self {
        let begun = Instant::now();
        let bin_dir = run_script("tests/cluster/ensure.sh", &[]).expect("tests/cluster/ensure.sh");
        let bin_dir = PathBuf::from(bin_dir.trim());
        let binaries = begun.elapsed();

        let begun = Instant::now();
        let images = build_images().expect("scripts/images.sh");
        let images_took = begun.elapsed();

        sweep_network(&bin_dir);
        let netns_before = netns_names();
        make_bridge().expect("making the bridge");

        let begun = Instant::now();
        let cp = ControlPlane::start_exposed(Some(Exposure {
            address: NODE_IP,
            names: [
                KUBERNETES_SERVICE_IP,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(str::to_owned)
            .to_vec(),
        }))
        .unwrap_or_else(|e| {
            let _ = run(Command::new("ip").args(["link", "delete", BRIDGE]));
            panic!("the control plane did not start: {e:#}")
        });
        let control_plane = begun.elapsed();

        let work = cp.work_dir().join("node");
        let mut cluster = Cluster {
            containerd_socket: work.join("containerd.sock"),
            cp,
            bin_dir,
            work,
            images,
            processes: Vec::new(),
            netns_before,
            sysctls: Vec::new(),
            stopped: false,
            times: StartTimes {
                binaries,
                images: images_took,
                control_plane,
                ..StartTimes::default()
            },
        };
        if let Err(e) = cluster.start_node() {
            let logs = cluster.log_tails();
            // Dropping tears down what was started before the panic reports why.
            drop(cluster);
            panic!("the cluster did not start: {e:#}\n{logs}");
        }
        eprintln!("[tollgate-e2e] cluster ready: {:?}", cluster.times);
        cluster
    }

    fn start_node(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.work)?;
        self.set_sysctl("net/ipv4/ip_forward", "1")?;
        self.set_sysctl("net/bridge/bridge-nf-call-iptables", "1")?;
        // Pods may talk to the host and to each other; nothing they send is forwarded elsewhere.
        iptables(&[
            "-I",
            "FORWARD",
            "-s",
            POD_CIDR,
            "!",
            "-o",
            BRIDGE,
            "-m",
            "comment",
            "--comment",
            RULE_COMMENT,
            "-j",
            "DROP",
        ])?;

        let begun = Instant::now();
        self.start_containerd()?;
        self.times.runtime = begun.elapsed();

        let begun = Instant::now();
        self.start_control_loops()?;
        self.start_kubelet()?;
        self.wait_node_ready()?;
        self.times.node_ready = begun.elapsed();
        self.start_metrics_server()
    }

    /// metrics-server on the host, behind the APIService `v1beta1.metrics.k8s.io`: the API server's
    /// aggregation layer proxies `metrics.k8s.io` to it (front-proxy client certificate, request
    /// headers), and it scrapes the kubelet's `/metrics/resource` every 10 s (the least it allows).
    /// A host process rather than a pod, like the other control loops here: the API server reaches it
    /// on the bridge without kube-proxy, and no third image has to be built. It answers only once it
    /// holds two scrapes; [`Cluster::wait_metrics_api`] waits for that.
    fn start_metrics_server(&mut self) -> Result<()> {
        let kubeconfig = self.cp.kubeconfig_path().to_owned();
        let (cert, key) = self.cp.node_serving_cert();
        let port = listen_port();
        let mut server = Command::new(self.bin_dir.join("metrics-server"));
        server
            .arg(flag("kubeconfig", &kubeconfig))
            .arg(flag("authentication-kubeconfig", &kubeconfig))
            .arg(flag("authorization-kubeconfig", &kubeconfig))
            .arg(format!("--bind-address={NODE_IP}"))
            .arg(format!("--secure-port={port}"))
            .arg(flag("tls-cert-file", cert))
            .arg(flag("tls-private-key-file", key))
            .arg(flag(
                "kubelet-certificate-authority",
                self.cp.ca_cert_path(),
            ))
            .arg("--kubelet-preferred-address-types=InternalIP")
            .arg("--kubelet-use-node-status-port")
            .arg("--metric-resolution=10s")
            // It must stay under 90 % of the resolution (the default, 10 s, does not).
            .arg("--kubelet-request-timeout=5s");
        self.launch("metrics-server", server)?;

        // A Service without a selector and an EndpointSlice of our own naming the host process; the
        // aggregator resolves the slice (--enable-aggregator-routing) and checks the serving
        // certificate against the CA bundle and the name metrics-server.kube-system.svc.
        let mut encode = Command::new("base64");
        encode.arg("-w0");
        let ca_bundle = run_with_stdin(encode, self.cp.ca_pem())
            .map_err(|e| anyhow!("base64 of the CA: {e}"))?;
        let manifest = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "metrics-server", "namespace": "kube-system"},
                    "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
                },
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": "metrics-server-host",
                        "namespace": "kube-system",
                        "labels": {
                            "kubernetes.io/service-name": "metrics-server",
                            "endpointslice.kubernetes.io/managed-by": "tollgate-e2e",
                        },
                    },
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [NODE_IP.to_string()], "conditions": {"ready": true}}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                },
                {
                    "apiVersion": "apiregistration.k8s.io/v1",
                    "kind": "APIService",
                    "metadata": {"name": "v1beta1.metrics.k8s.io"},
                    "spec": {
                        "group": "metrics.k8s.io",
                        "version": "v1beta1",
                        "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
                        "caBundle": ca_bundle,
                        "groupPriorityMinimum": 100,
                        "versionPriority": 100,
                    },
                },
            ],
        });
        let file = self.work.join("metrics-server.json");
        std::fs::write(&file, serde_json::to_string_pretty(&manifest)?)?;
        let mut apply = self.kubectl();
        apply.args(["apply", "-f"]).arg(&file);
        run_combined(apply).map_err(|e| anyhow!("registering metrics-server: {e}"))?;
        Ok(())
    }

    /// Waits until the resource metrics API answers with the node's usage (metrics-server needs two
    /// scrapes, 10 s apart, before it has any), and returns how long that took.
    pub fn wait_metrics_api(&mut self, within: Duration) -> Result<Duration> {
        let begun = Instant::now();
        loop {
            self.check_alive()?;
            let mut get = self.kubectl();
            get.args([
                "get",
                "--raw",
                &format!("/apis/metrics.k8s.io/v1beta1/nodes/{NODE_NAME}"),
            ]);
            let answer = run_combined(get).unwrap_or_else(|e| e);
            if answer.contains("\"usage\"") {
                return Ok(begun.elapsed());
            }
            if begun.elapsed() > within {
                bail!(
                    "the metrics API did not answer within {}s: {answer}",
                    within.as_secs()
                );
            }
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// The control plane underneath (kubectl, helm, clients).
    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    /// `kubectl` as the admin.
    pub fn kubectl(&self) -> Command {
        self.cp.kubectl()
    }

    /// `helm` as the admin.
    pub fn helm(&self) -> Command {
        self.cp.helm()
    }

    /// The image `name` (`proxy` or `controller`) as built and imported.
    pub fn image(&self, name: &str) -> &Image {
        self.images
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no image {name}"))
    }

    /// `ctr` on this cluster's containerd, in the kubelet's namespace.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.containerd_socket)
            .args(["--namespace", "k8s.io"]);
        cmd
    }

    /// The host pid of a running container, from its `containerd://<id>` in a pod's status.
    pub fn container_pid(&self, container_id: &str) -> Result<u32> {
        let id = container_id
            .strip_prefix("containerd://")
            .unwrap_or(container_id);
        let mut cmd = self.ctr();
        cmd.args(["tasks", "ls"]);
        let tasks = run_combined(cmd).map_err(|e| anyhow!("ctr tasks ls: {e}"))?;
        tasks
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(id)).then(|| fields.next()?.parse().ok())?
            })
            .ok_or_else(|| anyhow!("no running task {id} in:\n{tasks}"))
    }

    fn set_sysctl(&mut self, key: &str, value: &str) -> Result<()> {
        let path = Path::new("/proc/sys").join(key);
        let before = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
        self.sysctls.push((path, before.trim().to_owned()));
        Ok(())
    }

    fn launch(&mut self, name: &'static str, mut cmd: Command) -> Result<()> {
        let log = self.work.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = supervisor::spawn(cmd).with_context(|| format!("starting {name}"))?;
        self.processes.push((name, child, log));
        Ok(())
    }

    fn start_containerd(&mut self) -> Result<()> {
        let pause = std::fs::canonicalize(cache_dir().join("images/pause.tar"))
            .context("the pause image from tests/cluster/ensure.sh")?;
        let pause_ref = docker_archive_reference(&pause)?;
        let cni = self.work.join("cni");
        std::fs::create_dir_all(&cni)?;
        std::fs::write(
            cni.join("10-tollgate.conflist"),
            serde_json::to_string_pretty(&serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "tollgate",
                "plugins": [{
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "rangeStart": "10.88.1.0", "gateway": NODE_IP.to_string()}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": self.work.join("cni-ipam"),
                    },
                }],
            }))?,
        )?;
        let config = self.work.join("containerd.toml");
        let w = |p: &str| self.work.join(p).display().to_string();
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
# Snapshotters and plugins this machine has no use for (no btrfs, zfs or device mapper).
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "warn"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_ref}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This machine refuses a negative /proc/<pid>/oom_score_adj even to root (`echo -998 >
  # /proc/self/oom_score_adj`: Permission denied), which runc must write for the pod sandbox (-998);
  # restricted, containerd caps every score at its own (0) instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # No systemd on this machine: cgroupfs, as the kubelet's cgroupDriver.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
                root = w("containerd/root"),
                state = w("containerd/state"),
                socket = self.containerd_socket.display(),
                cni = cni.display(),
            ),
        )?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config);
        self.launch("containerd", cmd)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut version = self.ctr();
            version.arg("version");
            if run_combined(version).is_ok() {
                break;
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("containerd did not answer within 30s");
            }
            thread::sleep(Duration::from_millis(200));
        }
        let archives: Vec<PathBuf> = std::iter::once(pause)
            .chain(self.images.iter().map(|i| i.archive.clone()))
            .collect();
        for archive in archives {
            let mut import = self.ctr();
            import.args(["images", "import"]).arg(&archive);
            run_combined(import).map_err(|e| anyhow!("importing {}: {e}", archive.display()))?;
        }
        Ok(())
    }

    fn start_control_loops(&mut self) -> Result<()> {
        let kubeconfig = self.cp.kubeconfig_path().to_owned();
        let bin = self.bin_dir.clone();

        let mut kcm = Command::new(bin.join("kube-controller-manager"));
        kcm.arg(flag("kubeconfig", &kubeconfig))
            .arg("--secure-port=0")
            .arg("--leader-elect=false")
            .arg(flag("root-ca-file", self.cp.ca_cert_path()))
            .arg(flag(
                "service-account-private-key-file",
                self.cp.service_account_key_path(),
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--cluster-cidr=10.88.0.0/16")
            .arg("--allocate-node-cidrs=false")
            // The tests wait for scale-ups and take-overs; the defaults (15 s) would only slow them.
            .arg("--horizontal-pod-autoscaler-sync-period=5s")
            // How long the autoscaler keeps its highest recent recommendation before scaling down, for
            // HPAs without a `behavior` of their own (the chart's default); 5 minutes by default.
            .arg("--horizontal-pod-autoscaler-downscale-stabilization=15s")
            .arg("--node-monitor-period=2s");
        self.launch("kube-controller-manager", kcm)?;

        let mut scheduler = Command::new(bin.join("kube-scheduler"));
        scheduler
            .arg(flag("kubeconfig", &kubeconfig))
            .arg("--secure-port=0")
            .arg("--leader-elect=false");
        self.launch("kube-scheduler", scheduler)?;

        let mut proxy = Command::new(bin.join("kube-proxy"));
        proxy
            .arg(flag("kubeconfig", &kubeconfig))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg("--proxy-mode=iptables")
            .arg(format!("--cluster-cidr={POD_CIDR}"))
            .arg(format!(
                "--healthz-bind-address=127.0.0.1:{}",
                listen_port()
            ))
            .arg(format!(
                "--metrics-bind-address=127.0.0.1:{}",
                listen_port()
            ))
            // The conntrack table is the machine's; leave its size alone.
            .arg("--conntrack-max-per-core=0");
        self.launch("kube-proxy", proxy)?;

        let corefile = self.work.join("Corefile");
        std::fs::write(
            &corefile,
            format!(
                ".:53 {{\n    bind {NODE_IP}\n    ready 127.0.0.1:{}\n    health 127.0.0.1:{}\n    errors\n    cache 5\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {} tollgate-e2e\n        pods insecure\n    }}\n}}\n",
                listen_port(),
                listen_port(),
                kubeconfig.display()
            ),
        )?;
        let mut dns = Command::new(bin.join("coredns"));
        dns.arg("-conf").arg(&corefile);
        self.launch("coredns", dns)?;
        Ok(())
    }

    fn start_kubelet(&mut self) -> Result<()> {
        let root = self.work.join("kubelet");
        std::fs::create_dir_all(&root)?;
        // No search domains or servers from the host: pods resolve cluster names only.
        let resolv = self.work.join("resolv.conf");
        std::fs::write(&resolv, "")?;
        let config = self.work.join("kubelet.yaml");
        std::fs::write(
            &config,
            serde_json::to_string_pretty(&serde_json::json!({
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": NODE_IP.to_string(),
                "port": listen_port(),
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": listen_port(),
                "cgroupDriver": "cgroupfs",
                "containerRuntimeEndpoint": format!("unix://{}", self.containerd_socket.display()),
                "failSwapOn": false,
                "clusterDNS": [NODE_IP.to_string()],
                "clusterDomain": "cluster.local",
                "resolvConf": resolv,
                "podLogsDir": self.work.join("pod-logs"),
                "authentication": {
                    "anonymous": {"enabled": false},
                    "webhook": {"enabled": false},
                    "x509": {"clientCAFile": self.cp.ca_cert_path()},
                },
                "authorization": {"mode": "AlwaysAllow"},
                // Signed by the cluster's CA and naming NODE_IP, so metrics-server can verify it.
                "tlsCertFile": self.cp.node_serving_cert().0,
                "tlsPrivateKeyFile": self.cp.node_serving_cert().1,
                // The machine's disk is shared and mostly full of others' build output: evict only
                // when it is nearly gone.
                "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "serializeImagePulls": false,
                "syncFrequency": "5s",
                "fileCheckFrequency": "5s",
            }))?,
        )?;
        let mut kubelet = Command::new(self.bin_dir.join("kubelet"));
        kubelet
            .arg(flag("config", &config))
            .arg(flag("kubeconfig", self.cp.kubeconfig_path()))
            .arg(flag("root-dir", &root))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={NODE_IP}"))
            .arg("--v=1");
        self.launch("kubelet", kubelet)
    }

    fn wait_node_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let mut get = self.kubectl();
            get.args([
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            let answer = run_combined(get).unwrap_or_else(|e| e);
            if answer.trim() == "True" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {NODE_NAME} not Ready after {}s: {answer}",
                    NODE_READY_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// Fails if a started process has exited.
    fn check_alive(&mut self) -> Result<()> {
        for (name, child, log) in &mut self.processes {
            if let Some(status) = child.try_wait()? {
                supervisor::forget(child.id());
                bail!("{name} exited ({status}); log: {}", log.display());
            }
        }
        Ok(())
    }

    /// The last lines of every process's log.
    pub fn log_tails(&self) -> String {
        let mut report = String::new();
        for (name, _, log) in &self.processes {
            let text = std::fs::read(log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let _ = write!(
                report,
                "\n--- last lines of {name} ({}) ---\n{}",
                log.display(),
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            );
        }
        report
    }

    /// Tears the cluster down now and returns what is still on the machine afterwards (nothing, when
    /// the teardown did its job): processes, mounts, network namespaces, the bridge, `KUBE-*` chains,
    /// the rules marked as ours, the kubelet's cgroups.
    pub fn stop(mut self) -> Vec<String> {
        let mut left = self.teardown();
        let socket = self.containerd_socket.display().to_string();
        left.extend(
            processes_whose_cmdline_has(&socket)
                .into_iter()
                .map(|pid| format!("process {pid} (a shim of this containerd)")),
        );
        left.extend(
            mounts_under(&self.work)
                .into_iter()
                .map(|m| format!("mount {m}")),
        );
        left.extend(
            netns_names()
                .difference(&self.netns_before)
                .map(|n| format!("network namespace {n}")),
        );
        if Path::new("/sys/class/net").join(BRIDGE).exists() {
            left.push(format!("bridge {BRIDGE}"));
        }
        for family in ["iptables", "ip6tables"] {
            for table in ["filter", "nat", "mangle"] {
                let rules =
                    run(Command::new(family).args(["-w", "-t", table, "-S"])).unwrap_or_default();
                left.extend(
                    rules
                        .lines()
                        .filter(|r| r.contains("KUBE-") || r.contains(RULE_COMMENT))
                        .map(|r| format!("{family} -t {table}: {r}")),
                );
            }
        }
        left.extend(
            std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
                .map(|c| c.path().join("kubepods"))
                .filter(|p| p.exists())
                .map(|p| format!("cgroup {}", p.display())),
        );
        left
    }

    /// Stops everything and removes what the cluster left on the machine; reports what it could not.
    /// Runs once (from [`Cluster::stop`] or from `Drop`).
    fn teardown(&mut self) -> Vec<String> {
        if std::mem::replace(&mut self.stopped, true) {
            return Vec::new();
        }
        let mut problems = Vec::new();
        // The kubelet first, so it restarts nothing while the containers go.
        for (name, child, _) in self.processes.iter_mut().rev() {
            if *name == "containerd" {
                continue;
            }
            stop(child);
        }
        // Each container's first process: killing it ends its PID namespace, and so the container.
        let mut tasks = self.ctr();
        tasks.args(["tasks", "ls"]);
        if let Ok(list) = run_combined(tasks) {
            for pid in list
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<i32>().ok())
            {
                // SAFETY: plain syscall on a container process this cluster started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // The shims of this containerd: found by the socket they were given, killed by pid.
        let socket = self.containerd_socket.display().to_string();
        for pid in processes_whose_cmdline_has(&socket) {
            // SAFETY: plain syscall on a shim this cluster's containerd started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for (name, child, _) in self.processes.iter_mut() {
            if *name == "containerd" {
                stop(child);
            }
        }
        for (_, child, _) in &self.processes {
            supervisor::forget(child.id());
        }
        self.processes.clear();

        // Volumes, sandboxes' /dev/shm and snapshots under the work directory, deepest first.
        for mount in mounts_under(&self.work) {
            if let Err(e) = run(Command::new("umount").arg("--lazy").arg(&mount)) {
                problems.push(format!("umount {mount}: {e}"));
            }
        }
        for netns in netns_names().difference(&self.netns_before) {
            if let Err(e) = run(Command::new("ip").args(["netns", "delete", netns])) {
                problems.push(format!("ip netns delete {netns}: {e}"));
            }
        }
        sweep_network(&self.bin_dir);
        for (path, value) in self.sysctls.drain(..).rev() {
            if let Err(e) = std::fs::write(&path, &value) {
                problems.push(format!("restoring {}: {e}", path.display()));
            }
        }
        remove_pod_cgroups();
        problems
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let problems = self.teardown();
        if !problems.is_empty() {
            eprintln!(
                "[tollgate-e2e] cluster teardown left:\n{}",
                problems.join("\n")
            );
        }
    }
}

/// A port for one of the node's servers, below the machine's ephemeral range and free on every address
/// when asked. An ephemeral port (`bind(:0)`) can be taken by any outgoing connection between the
/// moment it is picked and the moment the server binds it (the kubelet once failed with `bind:
/// address already in use` so); below the range only another listener can take it.
fn listen_port() -> u16 {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let span = u64::from(high - low);
    // Where to start looking: differs between runs and between test processes.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = (u64::from(std::process::id()) * 7919 + u64::from(nanos)) % span;
    let mut given = GIVEN.lock().unwrap();
    (0..span)
        .map(|i| low + ((start + i) % span) as u16)
        .find(|port| {
            !given.contains(port) && std::net::TcpListener::bind(("0.0.0.0", *port)).is_ok()
        })
        .inspect(|port| {
            given.insert(*port);
        })
        .expect("a free port below the ephemeral range")
}

fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

fn cache_dir() -> PathBuf {
    std::env::var_os("TOLLGATE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tollgate"))
}

/// Runs a repository script with bash and returns its stdout; its stderr goes to the test's.
fn run_script(script: &str, env: &[(&str, &str)]) -> Result<String> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join(script))
        .envs(env.iter().copied())
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    // As in workspace::tollgate_binaries: cargo's per-crate variables would make build scripts rerun.
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO_")
            && !matches!(
                key.as_str(),
                "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_INCREMENTAL"
            ))
            || key == "OUT_DIR"
        {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!("{script} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds (or finds cached) the proxy and controller images, from binaries of the same cargo profile
/// as this test (a debug test binary takes the debug binaries `scripts/test.sh` builds anyway) unless
/// `TOLLGATE_IMAGE_PROFILE` says otherwise.
fn build_images() -> Result<Vec<Image>> {
    let profile = std::env::var("TOLLGATE_IMAGE_PROFILE").unwrap_or_else(|_| {
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        }
        .to_owned()
    });
    let out = run_script(
        "scripts/images.sh",
        &[("TOLLGATE_IMAGE_PROFILE", profile.as_str())],
    )?;
    let images = out
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, reference, archive, bytes] = fields[..] else {
                bail!("unexpected line from scripts/images.sh: {line}");
            };
            let (repository, tag) = reference
                .rsplit_once(':')
                .ok_or_else(|| anyhow!("no tag in {reference}"))?;
            Ok(Image {
                name: name.to_owned(),
                repository: repository.to_owned(),
                tag: tag.to_owned(),
                archive: PathBuf::from(archive),
                bytes: bytes.parse()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if images.len() != 2 {
        bail!("scripts/images.sh printed {} images: {out}", images.len());
    }
    Ok(images)
}

/// The image name a docker-archive carries (from its manifest.json's RepoTags).
fn docker_archive_reference(archive: &Path) -> Result<String> {
    let mut tar = Command::new("tar");
    tar.arg("-xOf").arg(archive).arg("manifest.json");
    let manifest: serde_json::Value = serde_json::from_str(
        &run_combined(tar).map_err(|e| anyhow!("reading {}: {e}", archive.display()))?,
    )?;
    manifest[0]["RepoTags"][0]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no RepoTags in {}", archive.display()))
}
