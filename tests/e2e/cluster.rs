//! The chart on a real one-node cluster: images built from the Dockerfiles, pods started by a kubelet,
//! probes answered, the quickstart called through the proxy Service, a rolling upgrade under load, the
//! leading controller's pod deleted, and an uninstall that leaves only the CRDs. The cluster is described in `tests/src/cluster.rs`; it needs root (bridges, iptables,
//! mounts, cgroups), as containerd and the kubelet do.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tollgate_e2e::{Cluster, readme_shell_blocks, repo_root, run_combined};

#[path = "cluster/hpa.rs"]
mod hpa;

/// How long every pod of the release may take to be Ready after `helm install` returns.
const PODS_READY_WITHIN: Duration = Duration::from_secs(180);
/// The quickstart's key and route (deploy/examples/quickstart/quickstart.yaml).
const QUICKSTART_KEY: &str = "tg-quickstart-demo-key";
/// The non-root user of the images (Dockerfiles) and of the chart's securityContext.
const NONROOT_UID: &str = "65532";
/// The HPA's maximum for this test: the node has 2 CPUs, and each proxy requests 250m.
const MAX_PROXIES: u64 = 4;
/// The HPA's CPU target for this test (the chart's default is 70): under the load of `hpa.rs` on a
/// machine busy with other builds the proxies reach 76-84 % of their request, too close to 70 % plus
/// the autoscaler's 10 % tolerance to scale every time.
const TARGET_CPU_PERCENT: u64 = 50;

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let mut cmd = cluster.kubectl();
    cmd.args(args);
    run_combined(cmd).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

fn get_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&kubectl(cluster, &all)).unwrap()
}

/// Runs one README command as written, plus `extra` arguments, against the cluster.
fn run_readme_command(cluster: &Cluster, line: &str, extra: &[String]) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut cmd = match words[0] {
        "kubectl" => cluster.kubectl(),
        "helm" => cluster.helm(),
        other => panic!("the README section runs only kubectl and helm, not {other}"),
    };
    cmd.current_dir(repo_root()).args(&words[1..]).args(extra);
    let begun = Instant::now();
    run_combined(cmd).unwrap_or_else(|e| panic!("README command `{line}` failed:\n{e}"));
    eprintln!(
        "[{:.1}s] {line} {}",
        begun.elapsed().as_secs_f64(),
        extra.join(" ")
    );
}

/// Pods of the release that are not Ready yet (name: phase and reason), or `Ok` with how many are.
fn release_pods_ready(cluster: &Cluster) -> Result<usize, String> {
    let pods = get_json(cluster, &["pods", "-n", "tollgate"]);
    let items = pods["items"].as_array().unwrap();
    let waiting: Vec<String> = items
        .iter()
        .filter(|p| {
            !p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .map(|p| {
            let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            format!(
                "{}: {} {}",
                p["metadata"]["name"].as_str().unwrap_or("?"),
                p["status"]["phase"].as_str().unwrap_or("?"),
                waiting["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    // Two controllers and the HPA's two proxies.
    if items.len() >= 4 && waiting.is_empty() {
        Ok(items.len())
    } else {
        Err(format!("{} pods; not ready: {waiting:?}", items.len()))
    }
}

/// POSTs a chat completion to `url` with curl; returns the status code and the body.
fn chat(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "10",
            "--write-out",
            "\n%{http_code}",
        ])
        .args(["-H", &format!("Authorization: Bearer {QUICKSTART_KEY}")])
        .args(["-H", "Content-Type: application/json"])
        .args([
            "-d",
            r#"{"model": "fake-chat", "messages": [{"role": "user", "content": "Hello!"}]}"#,
        ])
        .arg(url)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Callers calling the quickstart route through the Service until stopped, each waiting a little
/// between calls so that the route's 6,000 requests a minute are never reached.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    const WORKERS: usize = 2;
    const PAUSE: Duration = Duration::from_millis(50);

    fn start(url: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..Self::WORKERS)
            .map(|_| {
                let stop = stop.clone();
                let url = url.to_owned();
                std::thread::spawn(move || {
                    let (mut ok, mut failed) = (0, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match chat(&url) {
                            (200, _) => ok += 1,
                            (code, body) => failed.push(format!("{code}: {body}")),
                        }
                        std::thread::sleep(Self::PAUSE);
                    }
                    (ok, failed)
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops the callers: how many calls answered 200, and what the others got.
    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.workers.into_iter().map(|w| w.join().unwrap()).fold(
            (0, Vec::new()),
            |(ok, mut failed), (o, f)| {
                failed.extend(f);
                (ok + o, failed)
            },
        )
    }
}

/// The `Uid:` line of a process (real, effective, saved, filesystem).
fn uids(pid: u32) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

/// The mount options of a process's root file system, as the kernel reports them.
fn root_mount_options(pid: u32) -> String {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    // Field 5 is the mount point (relative to the process's root), field 6 the per-mount options.
    info.lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .rfind(|f| f.len() > 5 && f[4] == "/")
        .map(|f| f[5].to_owned())
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root and builds a cluster: run bash tests/cluster/test.sh (README: The chart on a real node)"]
fn the_chart_runs_on_a_real_node() {
    let mut cluster = Cluster::start();
    for name in ["proxy", "controller"] {
        let image = cluster.image(name);
        eprintln!(
            "[image] {}:{} {:.1} MB (from {}/Dockerfile)",
            image.repository,
            image.tag,
            image.bytes as f64 / 1e6,
            name
        );
    }

    // 1. Install as the README says, with the images just built (nothing is pulled: IfNotPresent).
    let blocks = readme_shell_blocks("Install on a cluster");
    let images: Vec<String> = ["controller", "proxy"]
        .iter()
        .flat_map(|name| {
            let image = cluster.image(name);
            [
                format!("--set={name}.image.repository={}", image.repository),
                format!("--set={name}.image.tag={}", image.tag),
            ]
        })
        .chain([
            format!("--set=proxy.autoscaling.maxReplicas={MAX_PROXIES}"),
            format!("--set=proxy.autoscaling.targetCPUUtilizationPercentage={TARGET_CPU_PERCENT}"),
        ])
        .collect();
    for line in &blocks[0] {
        let extra = if line.starts_with("helm install") {
            images.clone()
        } else {
            Vec::new()
        };
        run_readme_command(&cluster, line, &extra);
    }

    // 2. Every pod Ready within the bound: the proxies' readiness means they hold a snapshot.
    let installed = Instant::now();
    let pods = loop {
        let why = match release_pods_ready(&cluster) {
            Ok(n) => break n,
            Err(why) => why,
        };
        assert!(
            installed.elapsed() < PODS_READY_WITHIN,
            "pods not Ready within {PODS_READY_WITHIN:?}: {why}\n{}\nkubelet and friends:{}",
            kubectl(&cluster, &["get", "events", "-n", "tollgate"]),
            cluster.log_tails()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "[ready] {pods} pods Ready {:.1}s after helm install returned",
        installed.elapsed().as_secs_f64()
    );

    // 3. The quickstart, called through the proxy Service's cluster IP (kube-proxy's rules route it).
    kubectl(
        &cluster,
        &[
            "annotate",
            "namespace",
            "default",
            "--overwrite",
            &format!("tollgate.dev/path-prefixes={}", hpa::PATH_PREFIXES),
        ],
    );
    kubectl(
        &cluster,
        &[
            "apply",
            "-f",
            repo_root()
                .join("deploy/examples/quickstart/quickstart.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    let service = get_json(&cluster, &["service", "tollgate-proxy", "-n", "tollgate"]);
    let url = format!(
        "http://{}:{}/demo/v1/chat/completions",
        service["spec"]["clusterIP"].as_str().unwrap(),
        service["spec"]["ports"][0]["port"]
    );
    let applied = Instant::now();
    let (code, body) = loop {
        let (code, body) = chat(&url);
        if code == 200 || applied.elapsed() > Duration::from_secs(60) {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(code, 200, "{url}: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["object"], "chat.completion", "{body}");
    eprintln!(
        "[call] {url} answered 200 {:.1}s after the quickstart was applied",
        applied.elapsed().as_secs_f64()
    );

    // 4. Non-root and a read-only root, read from the running containers' processes.
    let pods = get_json(&cluster, &["pods", "-n", "tollgate"]);
    for pod in pods["items"].as_array().unwrap() {
        let name = pod["metadata"]["name"].as_str().unwrap();
        for container in pod["status"]["containerStatuses"].as_array().unwrap() {
            let id = container["containerID"].as_str().unwrap();
            let pid = cluster.container_pid(id).unwrap();
            let uids = uids(pid);
            assert!(
                uids.iter().all(|u| u == NONROOT_UID),
                "{name}: uids {uids:?}"
            );
            let options = root_mount_options(pid);
            assert!(
                options.split(',').any(|o| o == "ro"),
                "{name}: root mounted {options}"
            );
            eprintln!("[pod] {name}: pid {pid}, uids {uids:?}, root file system {options}");
        }
    }

    // 5. Load from the host: the HPA adds proxies, and removes them after; no call fails meanwhile.
    hpa::scales_the_proxies(
        &mut cluster,
        hpa::service_address(&service),
        &url,
        MAX_PROXIES,
    );

    // 6. A `helm upgrade` that changes the proxies' pod template rolls them while callers keep calling:
    // no call may fail (readiness, drain on SIGTERM, maxUnavailable 0, the PDB).
    let load = Load::start(&url);
    let upgrade = &blocks[blocks.len() - 2];
    assert!(upgrade[0].starts_with("helm upgrade"), "{upgrade:?}");
    let rolled = Instant::now();
    run_readme_command(
        &cluster,
        &upgrade[0],
        &["--set=proxy.podAnnotations.tollgate-e2e/rolled=yes".to_owned()],
    );
    let mut replicas = Vec::new();
    loop {
        let deployment = get_json(
            &cluster,
            &["deployment", "tollgate-proxy", "-n", "tollgate"],
        );
        let status = &deployment["status"];
        let sample = format!(
            "{:.0}s: {} pods, {} ready, {} updated",
            rolled.elapsed().as_secs_f64(),
            status["replicas"],
            status["readyReplicas"],
            status["updatedReplicas"]
        );
        if replicas.last() != Some(&sample) {
            replicas.push(sample);
        }
        let done = status["observedGeneration"] == deployment["metadata"]["generation"]
            && status["updatedReplicas"] == status["replicas"]
            && status["readyReplicas"] == status["replicas"]
            && status["replicas"].as_u64() >= Some(2);
        if done && rolled.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            rolled.elapsed() < PODS_READY_WITHIN,
            "the proxies did not roll within {PODS_READY_WITHIN:?}: {replicas:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Old pods finish draining after the Deployment counts them gone; keep calling through that.
    std::thread::sleep(Duration::from_secs(5));
    let (ok, failed) = load.stop();
    eprintln!(
        "[upgrade] proxies rolled in {:.1}s; {ok} calls answered 200, {} failed; replicas over time: {replicas:?}",
        rolled.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(ok > 0, "the load made no call");
    assert!(
        failed.is_empty(),
        "calls failed during the rolling upgrade: {failed:?}"
    );

    // 7. Delete the leading controller's pod: the other replica takes the Lease and keeps writing status.
    let lease = ["lease", "tollgate-controller", "-n", "tollgate"];
    let holder = get_json(&cluster, &lease)["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = Instant::now();
    kubectl(
        &cluster,
        &["delete", "pod", &holder, "-n", "tollgate", "--wait=false"],
    );
    let successor = loop {
        let now = get_json(&cluster, &lease)["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !now.is_empty() && now != holder {
            break now;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(60),
            "nobody took the Lease from {holder} within 60s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took_over = deleted.elapsed();
    kubectl(
        &cluster,
        &[
            "patch",
            "airoute",
            "demo",
            "-n",
            "default",
            "--type=merge",
            "-p",
            r#"{"spec":{"description":"Changed after the leader's pod was deleted."}}"#,
        ],
    );
    let patched = Instant::now();
    loop {
        let route = get_json(&cluster, &["airoute", "demo", "-n", "default"]);
        let generation = &route["metadata"]["generation"];
        let accepted = route["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
            .cloned()
            .unwrap_or_default();
        if &accepted["observedGeneration"] == generation && accepted["status"] == "True" {
            break;
        }
        assert!(
            patched.elapsed() < Duration::from_secs(30),
            "status not written for generation {generation} within 30s: {accepted}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "[leader] deleted {holder}; {successor} held the Lease {:.1}s later and wrote the route's status {:.1}s after a change",
        took_over.as_secs_f64(),
        patched.elapsed().as_secs_f64()
    );

    // 8. Uninstall as the README says: nothing of the release stays but the CRDs.
    let uninstall = blocks.last().unwrap();
    for line in uninstall {
        run_readme_command(&cluster, line, &[]);
    }
    let gone = Instant::now();
    loop {
        let left = kubectl(
            &cluster,
            &[
                "get",
                "all,configmaps,secrets,serviceaccounts,roles,rolebindings,poddisruptionbudgets,leases",
                "-n",
                "tollgate",
                "-o",
                "name",
            ],
        );
        // What Kubernetes itself keeps in every namespace.
        let left: Vec<&str> = left
            .lines()
            .filter(|l| *l != "configmap/kube-root-ca.crt" && *l != "serviceaccount/default")
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(90),
            "left in tollgate after uninstall: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let cluster_wide = kubectl(
        &cluster,
        &[
            "get",
            "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings",
            "-l",
            "app.kubernetes.io/instance=tollgate",
            "-o",
            "name",
        ],
    );
    assert!(cluster_wide.trim().is_empty(), "{cluster_wide}");
    let crds = kubectl(&cluster, &["get", "crd", "-o", "name"]);
    assert!(crds.contains("airoutes.tollgate.dev"), "{crds}");
    eprintln!(
        "[uninstall] release gone in {:.1}s; CRDs kept",
        gone.elapsed().as_secs_f64()
    );

    // 9. The machine as it was: no process, mount, namespace, bridge, rule or cgroup of the cluster.
    let stopping = Instant::now();
    let left = cluster.stop();
    assert!(
        left.is_empty(),
        "left after the teardown:\n{}",
        left.join("\n")
    );
    eprintln!(
        "[teardown] {:.1}s; nothing left",
        stopping.elapsed().as_secs_f64()
    );
}
