//! The chart's RBAC, proven with real tokens on a real API server: the controller's ServiceAccount may do
//! what the controller needs and no more, the proxy's may do nothing, and the real controller and proxy run
//! with exactly those identities, the chart's flags and the chart's TLS Secret, and work.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tollgate_e2e::{
    ControlPlane, Process, chart_dir, eventually, free_port, repo_root, run_combined,
    tollgate_binaries,
};

/// The namespace the scoped release watches, and one it does not.
const WATCHED: &str = "team-a";
const UNWATCHED: &str = "team-b";

/// Two releases, installed one after the other (concurrent installs would race to create the CRDs):
/// `tollgate` in namespace `tollgate`, watching only `team-a`, and `wide` in namespace `wide`, with defaults.
fn installed() -> &'static ControlPlane {
    static DONE: OnceLock<()> = OnceLock::new();
    let cp = ControlPlane::shared();
    DONE.get_or_init(|| {
        for ns in ["tollgate", "wide", WATCHED, UNWATCHED] {
            let mut create = cp.kubectl();
            create.args(["create", "namespace", ns]);
            run_combined(create).unwrap();
        }
        let mut install = cp.helm();
        install
            .args(["install", "tollgate"])
            .arg(chart_dir())
            .args(["--namespace", "tollgate"])
            .args([
                "--set",
                &format!("controller.watchNamespaces={{{WATCHED}}}"),
            ])
            .args(["--set", "tls.extraDnsNames={localhost}"]);
        run_combined(install).expect("helm install (scoped)");
        let mut install = cp.helm();
        install
            .args(["install", "wide"])
            .arg(chart_dir())
            .args(["--namespace", "wide"]);
        run_combined(install).expect("helm install (cluster-wide)");
    });
    cp
}

/// Asks `kubectl auth can-i` every question and returns the ones answered differently than expected.
fn wrong_answers(cp: &ControlPlane, kubeconfig: &Path, expected: &[(bool, &str)]) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(allowed, question)| {
            let mut cmd = cp.kubectl_with(kubeconfig);
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
    let kubeconfig = cp.token_kubeconfig(
        dir.path(),
        &cp.create_token("tollgate", "tollgate-controller", None),
    );
    let mut whoami = cp.kubectl_with(&kubeconfig);
    whoami.args([
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        run_combined(whoami).unwrap(),
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
        // ConfigMaps: REST services' OpenAPI documents, read through a labelled watch.
        format!("list configmaps -n {w}"),
        format!("watch configmaps -n {w}"),
        format!("create events.events.k8s.io -n {w}"),
        "create tokenreviews.authentication.k8s.io".to_owned(),
        // Path grants are annotations on Namespaces, read cluster-wide.
        "list namespaces".to_owned(),
        "watch namespaces".to_owned(),
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
        // ConfigMaps: read only, only in the watched namespace.
        format!("list configmaps -n {u}"),
        format!("update configmaps -n {w}"),
        format!("delete configmaps -n {w}"),
        // Nothing else in the cluster.
        format!("list pods -n {w}"),
        "create pods -n tollgate".to_owned(),
        "create serviceaccounts --subresource=token -n tollgate".to_owned(),
        "update leases.coordination.k8s.io/kube-scheduler -n tollgate".to_owned(),
        "create leases.coordination.k8s.io -n kube-system".to_owned(),
        "delete leases.coordination.k8s.io/tollgate-controller -n tollgate".to_owned(),
        "update namespaces".to_owned(),
        "patch namespaces".to_owned(),
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
    let kubeconfig = cp.token_kubeconfig(
        dir.path(),
        &cp.create_token("wide", "wide-tollgate-controller", None),
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
            // The same for ConfigMaps labelled tollgate.dev/config=true (REST services' OpenAPI
            // documents); never written.
            (true, "list configmaps --all-namespaces"),
            (false, "get configmaps -n kube-system"),
            (false, "update configmaps -n kube-system"),
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
    let pod_token = cp.create_token("tollgate", "tollgate-proxy", Some("tollgate-controller"));
    let kubeconfig = cp.token_kubeconfig(dir.path(), &pod_token);
    let mut get = cp.kubectl_with(&kubeconfig);
    get.args(["get", "--raw=/api"]);
    let refused = run_combined(get).expect_err("a tollgate-controller token is no API credential");
    assert!(
        refused.contains("Unauthorized") || refused.contains("provide credentials"),
        "{refused}"
    );

    // Even a token for the API server's audience grants the proxy's account nothing beyond what every
    // authenticated identity has: its `can-i --list` equals that of an account bound to nothing.
    let mut create = cp.kubectl();
    create.args(["create", "serviceaccount", "nobody", "-n", "tollgate"]);
    run_combined(create).unwrap();
    let rules = |account: &str| {
        let sub = dir.path().join(account);
        std::fs::create_dir_all(&sub).unwrap();
        let kubeconfig = cp.token_kubeconfig(&sub, &cp.create_token("tollgate", account, None));
        let mut list = cp.kubectl_with(&kubeconfig);
        list.args(["auth", "can-i", "--list", "-n", "tollgate"]);
        (run_combined(list).unwrap(), kubeconfig)
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
    let object: Value = serde_json::from_str(&run_combined(get).unwrap()).unwrap();
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
    run_combined(cmd)
}

/// One key of the chart's TLS Secret, decoded.
fn secret_key(cp: &ControlPlane, key: &str) -> Vec<u8> {
    cp.secret_data("tollgate", "tollgate-controller-tls", key)
        .into_bytes()
}

/// Host files that make up what the binaries may use of the runtime image,
/// gcr.io/distroless/cc-debian12:nonroot: glibc 2.36 (loader, libc, libm), libgcc_s and the CA bundle.
/// The host is Debian 12 as well, so these are the same library versions. Nothing else is copied:
/// a binary that needed another library or file would fail to start or to work below.
const IMAGE_FILES: &[(&str, &str)] = &[
    ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
    (
        "/lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libc.so.6",
    ),
    (
        "/lib/x86_64-linux-gnu/libm.so.6",
        "lib/x86_64-linux-gnu/libm.so.6",
    ),
    (
        "/lib/x86_64-linux-gnu/libgcc_s.so.1",
        "lib/x86_64-linux-gnu/libgcc_s.so.1",
    ),
    (
        "/etc/ssl/certs/ca-certificates.crt",
        "etc/ssl/certs/ca-certificates.crt",
    ),
];

/// The image's user, as in distroless `:nonroot` and the chart's runAsUser.
const NONROOT: &str = "65532:65532";

/// A root file system like the runtime image plus `files` (what the kubelet would mount), all owned by
/// root and read-only to the non-root user, as with readOnlyRootFilesystem.
fn runtime_root(dir: &Path, binary: &Path, files: &[(&str, Vec<u8>)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join("root");
    let put = |path: &str, bytes: &[u8], mode: u32| {
        let target = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, bytes).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for (host, inside) in IMAGE_FILES {
        put(inside, &std::fs::read(host).unwrap(), 0o755);
    }
    put(
        "etc/passwd",
        b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        0o644,
    );
    put("etc/group", b"root:x:0:\nnonroot:x:65532:\n", 0o644);
    let name = binary.file_name().unwrap().to_str().unwrap();
    put(
        &format!("usr/local/bin/{name}"),
        &std::fs::read(binary).unwrap(),
        0o755,
    );
    for (path, bytes) in files {
        put(path, bytes, 0o644);
    }
    // Directories: traversable, not writable, for the non-root user (tempdir makes its root 0700).
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    root
}

/// `binary`'s shared libraries must all be in the image, and no newer glibc than the image's 2.36.
fn assert_links_only_against_the_image(binary: &Path) {
    let mut ldd = Command::new("ldd");
    ldd.arg(binary);
    let libraries = run_combined(ldd).unwrap();
    for line in libraries.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let provided = name == "linux-vdso.so.1"
            || IMAGE_FILES
                .iter()
                .any(|(host, _)| host.ends_with(&format!("/{}", name.rsplit('/').next().unwrap())));
        assert!(
            provided,
            "{} needs {name}, which the image lacks",
            binary.display()
        );
    }
    let mut symbols = Command::new("objdump");
    symbols.arg("-T").arg(binary);
    let symbols = run_combined(symbols).unwrap();
    let newest = symbols
        .split("GLIBC_")
        .skip(1)
        .filter_map(|s| {
            let version: String = s
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            Some((parts.next()?, parts.next().unwrap_or(0)))
        })
        .max()
        .unwrap();
    assert!(
        newest <= (2, 36),
        "{} needs glibc {newest:?}",
        binary.display()
    );
}

/// Runs `binary` inside `root` as the non-root user, with an empty environment plus `env`.
fn spawn_in_root(
    name: &'static str,
    root: &Path,
    binary: &str,
    args: &[String],
    env: &[(&str, String)],
) -> Process {
    // An absolute path: the environment is cleared, PATH included.
    let mut cmd = Command::new("/usr/sbin/chroot");
    cmd.arg(format!("--userspec={NONROOT}"))
        .arg(root)
        .arg(format!("/usr/local/bin/{binary}"))
        .args(args)
        .env_clear();
    for (key, value) in env {
        cmd.env(key, value);
    }
    Process::spawn(name, cmd)
}

#[test]
fn the_real_controller_and_proxy_run_in_the_runtime_image_with_the_charts_accounts_flags_and_tls() {
    let cp = installed();
    let bin = tollgate_binaries();
    for binary in ["tollgate-controller", "tollgate-proxy"] {
        assert_links_only_against_the_image(&bin.join(binary));
    }
    let dir = tempfile::tempdir().unwrap();
    // What the kubelet mounts into every pod: /etc/hosts with the cluster's names (here the
    // controller Service's resolves to loopback, where the controller listens).
    let hosts = b"127.0.0.1 localhost tollgate-controller.tollgate.svc\n".to_vec();

    // The controller, as its pod runs it: in-cluster configuration from the automounted token of the
    // chart's ServiceAccount, the chart's flags (listen addresses aside: there is no pod IP), the chart's
    // certificate at the path the chart mounts it.
    let snapshot_port = free_port();
    let admin_port = free_port();
    let api_port = cp.server_url().rsplit(':').next().unwrap().to_owned();
    let controller_root = runtime_root(
        &dir.path().join("controller"),
        &bin.join("tollgate-controller"),
        &[
            ("/etc/hosts", hosts.clone()),
            (
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
                cp.create_token("tollgate", "tollgate-controller", None)
                    .into_bytes(),
            ),
            (
                "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                cp.ca_pem().as_bytes().to_vec(),
            ),
            (
                "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
                b"tollgate".to_vec(),
            ),
            ("/etc/tollgate/tls/tls.crt", secret_key(cp, "tls.crt")),
            ("/etc/tollgate/tls/tls.key", secret_key(cp, "tls.key")),
        ],
    );
    let args = deployment_args(
        cp,
        "tollgate-controller",
        &[
            ("--listen", format!("127.0.0.1:{snapshot_port}")),
            ("--admin-listen", format!("127.0.0.1:{admin_port}")),
        ],
    );
    let controller = spawn_in_root(
        "controller",
        &controller_root,
        "tollgate-controller",
        &args,
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_owned()),
            ("KUBERNETES_SERVICE_PORT", api_port),
            ("POD_NAME", "tollgate-controller-e2e".to_owned()),
            ("RUST_LOG", "info,kube=warn".to_owned()),
        ],
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let ready = format!("http://127.0.0.1:{admin_port}/readyz");
    rt.block_on(eventually(
        "the controller is ready",
        Duration::from_secs(60),
        || async { curl(&[&ready]) },
    ));
    // The chart's liveness and startup probes ask this one.
    curl(&[&format!("http://127.0.0.1:{admin_port}/healthz")]).expect("controller /healthz");
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
            match run_combined(get) {
                Ok(holder) if holder == "tollgate-controller-e2e" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    ));

    // The quickstart in the watched namespace: status appears (watch + status patch), the labelled
    // Secret is read (the consumer's key works below).
    let quickstart =
        std::fs::read_to_string(repo_root().join("deploy/examples/quickstart/quickstart.yaml"))
            .unwrap();
    let quickstart = quickstart.replace("namespace: default", &format!("namespace: {WATCHED}"));
    // The quickstart's /demo lies outside the namespace's default /team-a: an administrator grants it.
    let mut grant = cp.kubectl();
    grant.args([
        "annotate",
        "namespace",
        WATCHED,
        "tollgate.dev/path-prefixes=/demo",
    ]);
    run_combined(grant).expect("granting /demo");
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
            match run_combined(get) {
                Ok(status) if status == "True" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    ));

    // A consumer asking for a generated key: the controller creates its Secret (`create` on Secrets).
    let consumer =
        std::fs::read_to_string(repo_root().join("deploy/examples/consumer.yaml")).unwrap();
    cp.apply_yaml(WATCHED, &consumer).expect("consumer applied");
    rt.block_on(eventually(
        "the generated key's Secret appears",
        Duration::from_secs(30),
        || async {
            let mut get = cp.kubectl();
            get.args([
                "get",
                "secrets",
                "-n",
                WATCHED,
                "-o",
                "jsonpath={.items[?(@.metadata.ownerReferences[0].kind==\"Consumer\")].metadata.name}",
            ]);
            match run_combined(get) {
                Ok(names) if !names.trim().is_empty() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    ));

    // The proxy, as its pod runs it: no API credentials at all, the projected token for the
    // controller's audience and the CA at the chart's paths, the chart's controller URL (its port aside).
    let http_port = free_port();
    let proxy_admin = free_port();
    let proxy_root = runtime_root(
        &dir.path().join("proxy"),
        &bin.join("tollgate-proxy"),
        &[
            ("/etc/hosts", hosts),
            (
                "/var/run/secrets/tollgate/token",
                cp.create_token("tollgate", "tollgate-proxy", Some("tollgate-controller"))
                    .into_bytes(),
            ),
            (
                "/etc/tollgate/controller-ca/ca.crt",
                secret_key(cp, "ca.crt"),
            ),
        ],
    );
    let args = deployment_args(
        cp,
        "tollgate-proxy",
        &[
            (
                "--controller",
                format!("https://tollgate-controller.tollgate.svc:{snapshot_port}"),
            ),
            ("--listen", format!("127.0.0.1:{http_port}")),
            ("--admin-listen", format!("127.0.0.1:{proxy_admin}")),
        ],
    );
    let proxy = spawn_in_root("proxy", &proxy_root, "tollgate-proxy", &args, &[]);
    let ready = format!("http://127.0.0.1:{proxy_admin}/readyz");
    rt.block_on(eventually(
        "the proxy holds a snapshot from the controller",
        Duration::from_secs(30),
        || async { curl(&[&ready]) },
    ));
    curl(&[&format!("http://127.0.0.1:{proxy_admin}/healthz")]).expect("proxy /healthz");
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

    // A streamed call too, so the time-to-first-token histogram has a sample. The quickstart route
    // caches answers, and a stored whole answer now answers a stream: `no-cache` sends this one to
    // the provider, as the histogram measures.
    let streamed = curl(&[
        "-H",
        "Authorization: Bearer tg-quickstart-demo-key",
        "-H",
        "Cache-Control: no-cache",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"model":"fake-chat","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        &url,
    ])
    .unwrap();
    assert!(streamed.contains("data: [DONE]"), "{streamed}");

    // Every metric the chart's Grafana dashboard and the HPA's custom metric read is one the binaries
    // export.
    let exported = [admin_port, proxy_admin]
        .iter()
        .map(|port| curl(&[&format!("http://127.0.0.1:{port}/metrics")]).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let families: Vec<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let exports = |name: &str| {
        families.iter().any(|family| {
            name == *family
                || ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family))
        })
    };
    let dashboard =
        std::fs::read_to_string(repo_root().join("charts/tollgate/files/dashboard.json")).unwrap();
    let mut read: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("tollgate_"))
        .collect();
    read.push("tollgate_in_flight_requests");
    let missing: Vec<&&str> = read.iter().filter(|name| !exports(name)).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}\n{families:?}"
    );

    for (name, log) in [("controller", controller.log()), ("proxy", proxy.log())] {
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "{name} was refused something by the API server:\n{log}"
        );
    }
}
