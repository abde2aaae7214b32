//! The chart's RBAC, proven with real tokens on a real API server: the controller's ServiceAccount may do
//! what the controller needs and no more, the proxy's may do nothing, and the real controller and proxy run
//! with exactly those identities, the chart's flags and the chart's TLS Secret, and work.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tollgate_e2e::{ControlPlane, eventually};

/// The namespace the scoped release watches, and one it does not.
const WATCHED: &str = "team-a";
const UNWATCHED: &str = "team-b";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(mut cmd: Command) -> Result<String, String> {
    let out = cmd.output().expect("command starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Two releases, installed one after the other (concurrent installs would race to create the CRDs):
/// `tollgate` in namespace `tollgate`, watching only `team-a`, with `localhost` in its certificate so a
/// proxy on this machine can verify the controller; and `wide` in namespace `wide`, with defaults.
fn installed() -> &'static ControlPlane {
    static DONE: OnceLock<()> = OnceLock::new();
    let cp = ControlPlane::shared();
    DONE.get_or_init(|| {
        for ns in ["tollgate", "wide", WATCHED, UNWATCHED] {
            let mut create = cp.kubectl();
            create.args(["create", "namespace", ns]);
            run(create).unwrap();
        }
        let mut install = cp.helm();
        install
            .args(["install", "tollgate"])
            .arg(repo().join("charts/tollgate"))
            .args(["--namespace", "tollgate"])
            .args([
                "--set",
                &format!("controller.watchNamespaces={{{WATCHED}}}"),
            ])
            .args(["--set", "tls.extraDnsNames={localhost}"]);
        run(install).expect("helm install (scoped)");
        let mut install = cp.helm();
        install
            .args(["install", "wide"])
            .arg(repo().join("charts/tollgate"))
            .args(["--namespace", "wide"]);
        run(install).expect("helm install (cluster-wide)");
    });
    cp
}

/// A TokenRequest for `account` in `namespace`, with the API server's audience unless one is given.
fn token(cp: &ControlPlane, namespace: &str, account: &str, audience: Option<&str>) -> String {
    let mut cmd = cp.kubectl();
    cmd.args(["create", "token", account, "-n", namespace, "--duration=1h"]);
    if let Some(audience) = audience {
        cmd.arg(format!("--audience={audience}"));
    }
    run(cmd).expect("kubectl create token").trim().to_owned()
}

/// A kubeconfig that authenticates with `token` alone (no client certificate to fall back on).
fn token_kubeconfig(cp: &ControlPlane, dir: &Path, token: &str) -> PathBuf {
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, cp.ca_pem()).unwrap();
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": cp.server_url(), "certificate-authority": ca}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": "sa"}}],
        "current-context": "sa",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

fn kubectl_with(cp: &ControlPlane, kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(cp.bin_dir().join("kubectl"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(kubeconfig.with_file_name("cache"));
    cmd
}

/// Asks `kubectl auth can-i` every question and returns the ones answered differently than expected.
fn wrong_answers(cp: &ControlPlane, kubeconfig: &Path, expected: &[(bool, &str)]) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(allowed, question)| {
            let mut cmd = kubectl_with(cp, kubeconfig);
            cmd.args(["auth", "can-i"])
                .args(question.split_whitespace());
            let out = cmd.output().unwrap();
            let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let want = if *allowed { "yes" } else { "no" };
            (answer != want).then(|| format!("can-i {question}: {answer} (want {want})"))
        })
        .collect()
}

/// Retries the RBAC questions briefly: bindings reach the authorizer's cache asynchronously.
fn assert_answers(cp: &ControlPlane, kubeconfig: &Path, expected: &[(bool, &str)]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(eventually(
        "RBAC answers",
        Duration::from_secs(30),
        || async {
            let wrong = wrong_answers(cp, kubeconfig, expected);
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("; "))
            }
        },
    ));
}

#[test]
fn the_controller_account_may_do_what_the_controller_needs_and_no_more() {
    let cp = installed();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(
        cp,
        dir.path(),
        &token(cp, "tollgate", "tollgate-controller", None),
    );
    let mut whoami = kubectl_with(cp, &kubeconfig);
    whoami.args([
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        run(whoami).unwrap(),
        "system:serviceaccount:tollgate:tollgate-controller"
    );

    let w = WATCHED;
    let u = UNWATCHED;
    let needed = [
        format!("list airoutes.tollgate.dev -n {w}"),
        format!("watch modelproviders.tollgate.dev -n {w}"),
        format!("watch consumers.tollgate.dev -n {w}"),
        format!("watch apisubscriptions.tollgate.dev -n {w}"),
        format!("patch airoutes.tollgate.dev --subresource=status -n {w}"),
        format!("patch apisubscriptions.tollgate.dev --subresource=status -n {w}"),
        format!("list secrets -n {w}"),
        format!("watch secrets -n {w}"),
        format!("create secrets -n {w}"),
        format!("create events.events.k8s.io -n {w}"),
        "create tokenreviews.authentication.k8s.io".to_owned(),
        "create leases.coordination.k8s.io -n tollgate".to_owned(),
        "get leases.coordination.k8s.io/tollgate-controller -n tollgate".to_owned(),
        "update leases.coordination.k8s.io/tollgate-controller -n tollgate".to_owned(),
    ];
    let beyond = [
        // Secrets: only in the watched namespace, never one by name, never changed or deleted.
        format!("list secrets -n {u}"),
        "list secrets -n kube-system".to_owned(),
        "list secrets -n tollgate".to_owned(),
        "list secrets --all-namespaces".to_owned(),
        format!("get secrets -n {w}"),
        format!("update secrets -n {w}"),
        format!("delete secrets -n {w}"),
        // The resources themselves belong to their teams; the controller writes status only.
        format!("update airoutes.tollgate.dev -n {w}"),
        format!("patch airoutes.tollgate.dev -n {w}"),
        format!("delete apisubscriptions.tollgate.dev -n {w}"),
        format!("create consumers.tollgate.dev -n {w}"),
        format!("approve airoutes.tollgate.dev -n {w}"),
        format!("list airoutes.tollgate.dev -n {u}"),
        // Nothing else in the cluster.
        format!("list configmaps -n {w}"),
        format!("list pods -n {w}"),
        "create pods -n tollgate".to_owned(),
        "create serviceaccounts --subresource=token -n tollgate".to_owned(),
        "update leases.coordination.k8s.io/kube-scheduler -n tollgate".to_owned(),
        "create leases.coordination.k8s.io -n kube-system".to_owned(),
        "delete leases.coordination.k8s.io/tollgate-controller -n tollgate".to_owned(),
        "create clusterrolebindings".to_owned(),
        "escalate clusterroles".to_owned(),
        "impersonate users".to_owned(),
        "update customresourcedefinitions.apiextensions.k8s.io".to_owned(),
        "delete validatingadmissionpolicies.admissionregistration.k8s.io".to_owned(),
    ];
    let expected: Vec<(bool, &str)> = needed
        .iter()
        .map(|q| (true, q.as_str()))
        .chain(beyond.iter().map(|q| (false, q.as_str())))
        .collect();
    assert_answers(cp, &kubeconfig, &expected);
}

#[test]
fn a_cluster_wide_install_reads_labelled_secrets_everywhere_as_documented() {
    let cp = installed();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(
        cp,
        dir.path(),
        &token(cp, "wide", "wide-tollgate-controller", None),
    );
    assert_answers(
        cp,
        &kubeconfig,
        &[
            // RBAC cannot say "only Secrets with the label": watching every namespace means this.
            (true, "list secrets --all-namespaces"),
            (true, "watch airoutes.tollgate.dev --all-namespaces"),
            (false, "get secrets -n kube-system"),
            (false, "update secrets -n kube-system"),
            (false, "list configmaps --all-namespaces"),
            // Its Lease lives in its own namespace, not in the other release's.
            (
                true,
                "update leases.coordination.k8s.io/wide-tollgate-controller -n wide",
            ),
            (
                false,
                "update leases.coordination.k8s.io/tollgate-controller -n tollgate",
            ),
        ],
    );
}

#[test]
fn the_proxy_account_can_do_nothing_against_the_api() {
    let cp = installed();
    let dir = tempfile::tempdir().unwrap();

    // The token the proxy pod holds is for the controller's audience: the API server refuses it outright.
    let pod_token = token(
        cp,
        "tollgate",
        "tollgate-proxy",
        Some("tollgate-controller"),
    );
    let kubeconfig = token_kubeconfig(cp, dir.path(), &pod_token);
    let mut get = kubectl_with(cp, &kubeconfig);
    get.args(["get", "--raw=/api"]);
    let refused = run(get).expect_err("a tollgate-controller token is no API credential");
    assert!(
        refused.contains("Unauthorized") || refused.contains("provide credentials"),
        "{refused}"
    );

    // Even a token for the API server's audience grants the proxy's account nothing beyond what every
    // authenticated identity has: its `can-i --list` equals that of an account bound to nothing.
    let mut create = cp.kubectl();
    create.args(["create", "serviceaccount", "nobody", "-n", "tollgate"]);
    run(create).unwrap();
    let rules = |account: &str| {
        let sub = dir.path().join(account);
        std::fs::create_dir_all(&sub).unwrap();
        let kubeconfig = token_kubeconfig(cp, &sub, &token(cp, "tollgate", account, None));
        let mut list = kubectl_with(cp, &kubeconfig);
        list.args(["auth", "can-i", "--list", "-n", "tollgate"]);
        (run(list).unwrap(), kubeconfig)
    };
    let (proxy_rules, proxy_kubeconfig) = rules("tollgate-proxy");
    let (nobody_rules, _) = rules("nobody");
    assert_eq!(proxy_rules, nobody_rules);
    assert_answers(
        cp,
        &proxy_kubeconfig,
        &[
            (false, "get secrets -n tollgate"),
            (false, "list airoutes.tollgate.dev --all-namespaces"),
            (false, "create tokenreviews.authentication.k8s.io"),
            (false, "get leases.coordination.k8s.io -n tollgate"),
            (false, "list pods -n tollgate"),
            (false, "get configmaps -n tollgate"),
        ],
    );
}

/// A child process, killed when dropped and when the test process dies, with its stderr kept.
struct Process {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    fn spawn(name: &'static str, mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let mut reader = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
            let _ = reader.read_to_string(&mut line);
        });
        Self { name, child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.name, self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// `cargo build` of the controller and proxy binaries (a no-op when they are fresh); their directory.
fn binaries() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo())
        .args([
            "build",
            "-p",
            "tollgate-controller",
            "-p",
            "tollgate-proxy",
            "--bins",
        ])
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the controller and proxy failed");
    // This test is target/debug/deps/<name>; the binaries are in target/debug.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The args of a container in the installed Deployment, with `--flag=` values replaced where a local
/// process cannot use the in-cluster one (listen addresses, mounted file paths).
fn deployment_args(cp: &ControlPlane, deployment: &str, replace: &[(&str, String)]) -> Vec<String> {
    let mut get = cp.kubectl();
    get.args([
        "get",
        "deployment",
        deployment,
        "-n",
        "tollgate",
        "-o",
        "json",
    ]);
    let object: Value = serde_json::from_str(&run(get).unwrap()).unwrap();
    let args: Vec<String> = object["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    for (flag, _) in replace {
        assert!(
            args.iter().any(|a| a.starts_with(&format!("{flag}="))),
            "{deployment} has no {flag}: {args:?}"
        );
    }
    args.into_iter()
        .map(|arg| {
            replace
                .iter()
                .find(|(flag, _)| arg.starts_with(&format!("{flag}=")))
                .map_or(arg.clone(), |(flag, value)| format!("{flag}={value}"))
        })
        .collect()
}

/// Writes one key of the chart's TLS Secret to a file, as the pod's volume would hold it.
fn secret_file(cp: &ControlPlane, dir: &Path, key: &str) -> PathBuf {
    let mut get = cp.kubectl();
    get.args([
        "get",
        "secret",
        "tollgate-controller-tls",
        "-n",
        "tollgate",
        "-o",
        "json",
    ]);
    let secret: Value = serde_json::from_str(&run(get).unwrap()).unwrap();
    let mut decode = Command::new("base64");
    decode.arg("-d");
    let pem = tollgate_e2e::run_with_stdin(decode, secret["data"][key].as_str().unwrap()).unwrap();
    let path = dir.join(key);
    std::fs::write(&path, pem).unwrap();
    path
}

fn curl(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "--silent",
        "--show-error",
        "--fail-with-body",
        "--max-time",
        "5",
    ])
    .args(args);
    run(cmd)
}

#[test]
fn the_real_controller_and_proxy_work_with_the_charts_accounts_flags_and_certificate() {
    let cp = installed();
    let bin = binaries();
    let dir = tempfile::tempdir().unwrap();

    // The controller: the chart's ServiceAccount (a TokenRequest, as the pod's automounted token
    // would be), the chart's flags, the chart's certificate.
    let controller_dir = dir.path().join("controller");
    std::fs::create_dir_all(&controller_dir).unwrap();
    let kubeconfig = token_kubeconfig(
        cp,
        &controller_dir,
        &token(cp, "tollgate", "tollgate-controller", None),
    );
    let snapshot_port = free_port();
    let admin_port = free_port();
    let args = deployment_args(
        cp,
        "tollgate-controller",
        &[
            ("--listen", format!("127.0.0.1:{snapshot_port}")),
            ("--admin-listen", format!("127.0.0.1:{admin_port}")),
            (
                "--tls-cert",
                secret_file(cp, &controller_dir, "tls.crt")
                    .display()
                    .to_string(),
            ),
            (
                "--tls-key",
                secret_file(cp, &controller_dir, "tls.key")
                    .display()
                    .to_string(),
            ),
        ],
    );
    let mut cmd = Command::new(bin.join("tollgate-controller"));
    cmd.args(&args)
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", "tollgate-controller-e2e")
        .env("RUST_LOG", "info,kube=warn");
    let controller = Process::spawn("controller", cmd);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let ready = format!("http://127.0.0.1:{admin_port}/readyz");
    rt.block_on(eventually(
        "the controller is ready",
        Duration::from_secs(60),
        || async { curl(&[&ready]) },
    ));
    // It took its Lease (get/create/update on Leases in its namespace).
    rt.block_on(eventually(
        "the controller holds the Lease",
        Duration::from_secs(30),
        || async {
            let mut get = cp.kubectl();
            get.args([
                "get",
                "lease",
                "tollgate-controller",
                "-n",
                "tollgate",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ]);
            match run(get) {
                Ok(holder) if holder == "tollgate-controller-e2e" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    ));

    // The quickstart in the watched namespace: status appears (watch + status patch), the labelled
    // Secret is read (the consumer's key works below).
    let quickstart =
        std::fs::read_to_string(repo().join("deploy/examples/quickstart/quickstart.yaml")).unwrap();
    let quickstart = quickstart.replace("namespace: default", &format!("namespace: {WATCHED}"));
    cp.apply_yaml(WATCHED, &quickstart)
        .expect("quickstart applied");
    rt.block_on(eventually(
        "the route is Accepted",
        Duration::from_secs(30),
        || async {
            let mut get = cp.kubectl();
            get.args([
                "get",
                "airoute",
                "demo",
                "-n",
                WATCHED,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Accepted\")].status}",
            ]);
            match run(get) {
                Ok(status) if status == "True" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    ));

    // The proxy: the chart's flags, its ServiceAccount's token for the controller's audience (what the
    // projected volume holds), the chart's CA, and the controller reached by a name in its certificate.
    let proxy_dir = dir.path().join("proxy");
    std::fs::create_dir_all(&proxy_dir).unwrap();
    let token_file = proxy_dir.join("token");
    std::fs::write(
        &token_file,
        token(
            cp,
            "tollgate",
            "tollgate-proxy",
            Some("tollgate-controller"),
        ),
    )
    .unwrap();
    let http_port = free_port();
    let proxy_admin = free_port();
    let args = deployment_args(
        cp,
        "tollgate-proxy",
        &[
            ("--controller", format!("https://localhost:{snapshot_port}")),
            (
                "--controller-ca",
                secret_file(cp, &proxy_dir, "ca.crt").display().to_string(),
            ),
            ("--token-file", token_file.display().to_string()),
            ("--listen", format!("127.0.0.1:{http_port}")),
            ("--admin-listen", format!("127.0.0.1:{proxy_admin}")),
        ],
    );
    let mut cmd = Command::new(bin.join("tollgate-proxy"));
    cmd.args(&args).env_clear();
    let proxy = Process::spawn("proxy", cmd);
    let ready = format!("http://127.0.0.1:{proxy_admin}/readyz");
    rt.block_on(eventually(
        "the proxy holds a snapshot from the controller",
        Duration::from_secs(30),
        || async { curl(&[&ready]) },
    ));
    let url = format!("http://127.0.0.1:{http_port}/demo/v1/chat/completions");
    let answer = rt.block_on(eventually(
        "a call through the proxy succeeds",
        Duration::from_secs(30),
        || async {
            curl(&[
                "-H",
                "Authorization: Bearer tg-quickstart-demo-key",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"model":"fake-chat","messages":[{"role":"user","content":"hi"}]}"#,
                &url,
            ])
        },
    ));
    assert!(answer.contains("\"choices\""), "{answer}");

    for (name, log) in [("controller", controller.log()), ("proxy", proxy.log())] {
        assert!(
            !log.contains("forbidden") && !log.contains("Forbidden"),
            "{name} was refused something by the API server:\n{log}"
        );
    }
}
