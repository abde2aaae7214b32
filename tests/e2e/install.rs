//! The README's "Install on a cluster" section, run command by command against a real API server:
//! install, grant `approve`, upgrade, uninstall, with the objects checked after each step.
//! There is no kubelet, so no pod ever runs: what is checked is what Helm and the API server made.

use std::time::Duration;

use serde_json::Value;
use tollgate_e2e::{
    CRD_NAMES, ControlPlane, certificate_text, chart_dir, decode_base64, eventually,
    readme_shell_blocks, repo_root, run_combined,
};

/// The shell blocks of the README section "Install on a cluster", each as its list of commands.
fn readme_blocks() -> Vec<Vec<String>> {
    readme_shell_blocks("Install on a cluster")
}

/// Runs one README command as written, with only the connection to the test's API server added.
fn run_readme_command(cp: &ControlPlane, line: &str) -> String {
    assert!(
        !line.contains(['"', '\'', '$', '|', '\\']),
        "README commands are run without a shell; keep them plain: {line}"
    );
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut cmd = match words[0] {
        "kubectl" => cp.kubectl(),
        "helm" => cp.helm(),
        other => panic!("the README section runs only kubectl and helm, not {other}"),
    };
    cmd.current_dir(repo_root()).args(&words[1..]);
    let begun = std::time::Instant::now();
    let out = run_combined(cmd).unwrap_or_else(|e| panic!("README command `{line}` failed:\n{e}"));
    eprintln!("[{:.1}s] {line}", begun.elapsed().as_secs_f64());
    out
}

fn get_json(cp: &ControlPlane, args: &[&str]) -> Value {
    let mut cmd = cp.kubectl();
    cmd.arg("get").args(args).args(["-o", "json"]);
    serde_json::from_str(&run_combined(cmd).unwrap_or_else(|e| panic!("kubectl get {args:?}: {e}")))
        .unwrap()
}

fn exists(cp: &ControlPlane, args: &[&str]) -> bool {
    let mut cmd = cp.kubectl();
    cmd.arg("get").args(args).arg("--ignore-not-found");
    !run_combined(cmd).unwrap().trim().is_empty()
}

/// `kubectl auth can-i` as `user` in `groups`; `true` for "yes".
fn can_i(cp: &ControlPlane, user: &str, groups: &[&str], args: &[&str]) -> bool {
    cp.can_i(user, groups, args) == "yes"
}

#[test]
fn readme_install_upgrade_and_uninstall() {
    let cp = ControlPlane::shared();
    let blocks = readme_blocks();
    assert_eq!(
        blocks.len(),
        6,
        "install, approve, decide, grant paths, upgrade, uninstall: {blocks:?}"
    );

    // 1. Install.
    for line in &blocks[0] {
        run_readme_command(cp, line);
    }
    let status: Value = {
        let mut cmd = cp.helm();
        cmd.args([
            "status",
            "tollgate",
            "--namespace",
            "tollgate",
            "-o",
            "json",
        ]);
        serde_json::from_str(&run_combined(cmd).unwrap()).unwrap()
    };
    assert_eq!(status["info"]["status"], "deployed");
    assert!(
        status["info"]["notes"]
            .as_str()
            .unwrap()
            .contains("rollout status deployment/tollgate-controller"),
        "NOTES.txt tells the next command"
    );

    let ns = get_json(cp, &["namespace", "tollgate"]);
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    for crd in CRD_NAMES {
        assert!(exists(cp, &["crd", crd]), "{crd}");
    }
    let controller = get_json(cp, &["deployment", "tollgate-controller", "-n", "tollgate"]);
    assert_eq!(controller["spec"]["replicas"], 2);
    let args = controller["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    for expected in [
        "--lease-namespace=tollgate",
        "--lease-name=tollgate-controller",
        "--allowed-proxy-sa=tollgate:tollgate-proxy",
    ] {
        assert!(
            args.as_array().unwrap().iter().any(|a| a == expected),
            "{expected} in {args}"
        );
    }
    let proxy = get_json(cp, &["deployment", "tollgate-proxy", "-n", "tollgate"]);
    assert!(
        proxy["spec"]["replicas"].is_null() || proxy["spec"]["replicas"] == 1,
        "the HPA owns the proxy replica count"
    );
    let hpa = get_json(cp, &["hpa", "tollgate-proxy", "-n", "tollgate"]);
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 10);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "tollgate-proxy");
    for pdb in ["tollgate-controller", "tollgate-proxy"] {
        assert!(exists(cp, &["pdb", pdb, "-n", "tollgate"]), "{pdb}");
    }
    let service = get_json(cp, &["service", "tollgate-proxy", "-n", "tollgate"]);
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert!(exists(
        cp,
        &[
            "validatingadmissionpolicybinding",
            "tollgate-subscription-approval"
        ]
    ));

    let tls = get_json(cp, &["secret", "tollgate-controller-tls", "-n", "tollgate"]);
    let cert = certificate_text(&decode_base64(tls["data"]["tls.crt"].as_str().unwrap()));
    assert!(
        cert.contains("DNS:tollgate-controller.tollgate.svc,"),
        "{cert}"
    );
    let checksum = proxy["spec"]["template"]["metadata"]["annotations"]["checksum/tls"].clone();

    // The user roles reach view/edit/admin (aggregation is the controller-manager's job; the harness
    // plays it).
    cp.aggregate_cluster_roles();
    let team = cp.namespace("team-a");
    team.grant_cluster_role("viewer", "view");
    team.grant_cluster_role("editor", "edit");
    team.grant_cluster_role("owner", "admin");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(eventually(
        "aggregated roles take effect",
        Duration::from_secs(30),
        || async {
            let t = team.name();
            let checks = [
                can_i(
                    cp,
                    "viewer",
                    &[],
                    &["list", "airoutes.tollgate.dev", "-n", t],
                ),
                !can_i(
                    cp,
                    "viewer",
                    &[],
                    &["create", "airoutes.tollgate.dev", "-n", t],
                ),
                can_i(
                    cp,
                    "editor",
                    &[],
                    &["create", "apisubscriptions.tollgate.dev", "-n", t],
                ),
                !can_i(
                    cp,
                    "editor",
                    &[],
                    &["approve", "airoutes.tollgate.dev", "-n", t],
                ),
                can_i(
                    cp,
                    "owner",
                    &[],
                    &["approve", "airoutes.tollgate.dev", "-n", t],
                ),
            ];
            if checks.iter().all(|ok| *ok) {
                Ok(())
            } else {
                Err(format!("view/edit/admin checks: {checks:?}"))
            }
        },
    ));

    // 2. Grant `approve` as documented. The README's team is `team-a`; this control plane is this test's own.
    let mut create = cp.kubectl();
    create.args(["create", "namespace", "team-a"]);
    run_combined(create).unwrap();
    for line in &blocks[1] {
        run_readme_command(cp, line);
    }
    rt.block_on(eventually(
        "the approver binding takes effect",
        Duration::from_secs(30),
        || async {
            let args = ["approve", "airoutes.tollgate.dev/chat", "-n", "team-a"];
            match (can_i(cp, "alice", &[], &args), can_i(cp, "bob", &[], &args)) {
                (true, false) => Ok(()),
                other => Err(format!("alice, bob may approve: {other:?}")),
            }
        },
    ));

    // The chart's admission policy holds: editors of team-a may not decide on a subscription to its
    // route, alice (approver, and editor for the patch itself) may.
    for file in ["modelprovider", "airoute", "consumer", "apisubscription"] {
        let yaml =
            std::fs::read_to_string(repo_root().join(format!("deploy/examples/{file}.yaml")))
                .unwrap();
        cp.apply_yaml("team-a", &yaml)
            .unwrap_or_else(|e| panic!("{file}.yaml: {e}"));
    }
    cp.grant_cluster_role("team-a", "alice", "edit");
    cp.grant_cluster_role("team-a", "bob", "edit");
    let decide = |user: &str| {
        let mut patch = cp.kubectl_as(user, &[]);
        patch.args([
            "patch",
            "apisubscription",
            "reporting-bot-chat",
            "-n",
            "team-a",
            "--type=merge",
            "-p",
            r#"{"spec":{"decision":"Approved"}}"#,
        ]);
        run_combined(patch)
    };
    let refused = rt.block_on(eventually(
        "bob may patch but not decide",
        Duration::from_secs(30),
        || async {
            match decide("bob") {
                Err(e) if e.contains("may not set spec.decision") => Ok(e),
                other => Err(format!("{other:?}")),
            }
        },
    ));
    assert!(
        refused.contains("tollgate-subscription-approval"),
        "{refused}"
    );
    rt.block_on(eventually(
        "alice may decide",
        Duration::from_secs(30),
        || async { decide("alice") },
    ));

    // 3. A decider from another team, as documented: cluster-wide patch on subscriptions only.
    for line in &blocks[2] {
        run_readme_command(cp, line);
    }
    rt.block_on(eventually(
        "alice may patch subscriptions everywhere, and nothing else",
        Duration::from_secs(30),
        || async {
            let anywhere = [
                "patch",
                "apisubscriptions.tollgate.dev",
                "-n",
                "kube-public",
            ];
            let delete = [
                "delete",
                "apisubscriptions.tollgate.dev",
                "-n",
                "kube-public",
            ];
            let routes = ["patch", "airoutes.tollgate.dev", "-n", "kube-public"];
            match (
                can_i(cp, "alice", &[], &anywhere),
                can_i(cp, "alice", &[], &delete),
                can_i(cp, "alice", &[], &routes),
            ) {
                (true, false, false) => Ok(()),
                other => Err(format!("patch, delete, patch routes: {other:?}")),
            }
        },
    ));

    // 4. Path grants: the annotations are set as written.
    for line in &blocks[3] {
        run_readme_command(cp, line);
    }
    let namespace = get_json(cp, &["namespace", "team-a"]);
    let annotations = &namespace["metadata"]["annotations"];
    assert_eq!(annotations["tollgate.dev/path-prefixes"], "/team-a,/chat");
    assert_eq!(
        annotations["tollgate.dev/hostnames"],
        "api.example.com,*.team-a.example.com"
    );

    // 5. Upgrade: the value changes, the certificate does not.
    for line in &blocks[4] {
        run_readme_command(cp, line);
    }
    let hpa = get_json(cp, &["hpa", "tollgate-proxy", "-n", "tollgate"]);
    assert_eq!(hpa["spec"]["maxReplicas"], 20);
    let after = get_json(cp, &["secret", "tollgate-controller-tls", "-n", "tollgate"]);
    assert_eq!(
        after["data"], tls["data"],
        "helm upgrade keeps the generated CA and certificate"
    );
    let proxy = get_json(cp, &["deployment", "tollgate-proxy", "-n", "tollgate"]);
    assert_eq!(
        proxy["spec"]["template"]["metadata"]["annotations"]["checksum/tls"], checksum,
        "so the pods are not restarted for nothing"
    );
    let mut history = cp.helm();
    history.args([
        "history",
        "tollgate",
        "--namespace",
        "tollgate",
        "-o",
        "json",
    ]);
    let history: Value = serde_json::from_str(&run_combined(history).unwrap()).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2);

    // 6. Uninstall: everything the release made goes, the CRDs (and so users' resources) stay.
    for line in &blocks[5] {
        run_readme_command(cp, line);
    }
    for object in [
        &["deployment", "tollgate-controller", "-n", "tollgate"][..],
        &["deployment", "tollgate-proxy", "-n", "tollgate"],
        &["secret", "tollgate-controller-tls", "-n", "tollgate"],
        &["serviceaccount", "tollgate-proxy", "-n", "tollgate"],
        &["hpa", "tollgate-proxy", "-n", "tollgate"],
        &["clusterrole", "tollgate-controller"],
        &["clusterrolebinding", "tollgate-controller"],
        &["clusterrole", "tollgate-edit"],
        &["clusterrole", "tollgate-decider"],
        &["clusterrolebinding", "tollgate-controller-namespaces"],
        &[
            "validatingadmissionpolicy",
            "tollgate-subscription-approval",
        ],
    ] {
        assert!(!exists(cp, object), "{object:?} outlived helm uninstall");
    }
    assert!(
        exists(cp, &["crd", "airoutes.tollgate.dev"]),
        "helm keeps CRDs"
    );
}

/// The chart-generated certificate: kept by upgrades, issued anew (and the pods rolled) when the names
/// it must carry change.
#[test]
fn the_generated_certificate_follows_its_names_and_nothing_else() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("certs");
    // Its own release; the README test installs the CRDs, and two installs must not race for them.
    let helm = |verb: &str, extra: &[&str]| {
        let mut cmd = cp.helm();
        cmd.args([verb, "certs"])
            .arg(chart_dir())
            .args(["--namespace", ns.name(), "--skip-crds"])
            .args(if verb == "upgrade" {
                &["--reuse-values"][..]
            } else {
                &[]
            })
            .args(extra);
        run_combined(cmd).unwrap_or_else(|e| panic!("helm {verb} {extra:?}: {e}"));
    };
    let material = || {
        let secret = get_json(
            cp,
            &["secret", "certs-tollgate-controller-tls", "-n", ns.name()],
        );
        let proxy = get_json(cp, &["deployment", "certs-tollgate-proxy", "-n", ns.name()]);
        let controller = get_json(
            cp,
            &["deployment", "certs-tollgate-controller", "-n", ns.name()],
        );
        let checksum =
            |d: &Value| d["spec"]["template"]["metadata"]["annotations"]["checksum/tls"].clone();
        assert_eq!(checksum(&proxy), checksum(&controller));
        (secret["data"].clone(), checksum(&proxy))
    };

    helm("install", &[]);
    let first = material();
    helm("upgrade", &["--set", "proxy.replicas=3"]);
    assert_eq!(
        material(),
        first,
        "an unrelated change keeps the certificate"
    );

    helm(
        "upgrade",
        &["--set", "tls.extraDnsNames={tollgate.example.com}"],
    );
    let second = material();
    assert_ne!(second.0, first.0, "new names, new certificate");
    assert_ne!(second.1, first.1, "and the pods roll to pick it up");
    let cert = certificate_text(&decode_base64(second.0["tls.crt"].as_str().unwrap()));
    assert!(cert.contains("DNS:tollgate.example.com"), "{cert}");
    assert!(
        cert.contains(&format!("DNS:certs-tollgate-controller.{ns}.svc,")),
        "{cert}"
    );
    // The proxies' CA signed it.
    let dir = tempfile::tempdir().unwrap();
    for key in ["ca.crt", "tls.crt"] {
        let pem = decode_base64(second.0[key].as_str().unwrap());
        std::fs::write(dir.path().join(key), pem).unwrap();
    }
    let mut verify = std::process::Command::new("openssl");
    verify
        .args(["verify", "-CAfile"])
        .arg(dir.path().join("ca.crt"))
        .arg(dir.path().join("tls.crt"));
    run_combined(verify).expect("the certificate verifies against the CA the proxies mount");

    helm("upgrade", &["--set", "proxy.logLevel=debug"]);
    assert_eq!(material(), second, "and is kept again afterwards");
}
