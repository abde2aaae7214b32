//! The Helm chart and the plain manifests on a real API server: `helm lint --strict`, renders with default
//! values and with every option on accepted by server-side dry-run, pods that pass the `restricted` pod
//! security level, a values schema that catches mistakes, generated copies that match their sources, and
//! `kubectl apply -f deploy/` as its header documents.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use tollgate_e2e::{
    ControlPlane, TestNamespace, certificate_text, chart_dir, repo_root, run_combined,
    run_with_stdin,
};

/// Kinds only optional features render: off by default, all on with `ci/all-options-values.yaml`.
const OPTIONAL_KINDS: [&str; 6] = [
    "Ingress",
    "ServiceMonitor",
    "NetworkPolicy",
    "ConfigMap",
    "Certificate",
    "Issuer",
];

/// `helm template <release> charts/tollgate --namespace <ns>` plus `args`.
fn render(cp: &ControlPlane, release: &str, namespace: &str, args: &[&str]) -> String {
    let mut cmd = cp.helm();
    cmd.arg("template")
        .arg(release)
        .arg(chart_dir())
        .args(["--namespace", namespace])
        .args(args);
    run_combined(cmd).unwrap_or_else(|e| panic!("helm template {args:?}: {e}"))
}

/// The `kind` of every document, in order.
fn kinds(docs: &[Value]) -> Vec<&str> {
    docs.iter().filter_map(|d| d["kind"].as_str()).collect()
}

/// The documents of a multi-document YAML stream, as JSON values (empty documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    // Helm separates documents with a line `---`; none of ours has such a line inside a block scalar.
    yaml.split("\n---")
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the render"))
}

/// Server-side dry-run apply as the admin: the API server validates, defaults and admits everything.
fn dry_run(cp: &ControlPlane, yaml: &str) -> Result<String, String> {
    let mut cmd = cp.kubectl();
    cmd.args([
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=helm-e2e",
        "-f",
        "-",
    ]);
    run_with_stdin(cmd, yaml)
}

/// The API server knows neither cert-manager nor the Prometheus Operator. To let it judge the chart's
/// Certificates, Issuers and ServiceMonitors at all, register their kinds with schemas that accept any
/// content (written here, not taken from those projects): this proves kind, version and scope, not fields.
fn with_foreign_kinds() -> &'static ControlPlane {
    static DONE: OnceLock<()> = OnceLock::new();
    let cp = ControlPlane::shared();
    DONE.get_or_init(|| {
        let crd = |group: &str, kind: &str, plural: &str| {
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                 metadata: {{name: {plural}.{group}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  \
                 names: {{kind: {kind}, plural: {plural}, singular: {singular}, listKind: {kind}List}}\n  \
                 versions:\n    - name: v1\n      served: true\n      storage: true\n      \
                 schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n",
                singular = kind.to_lowercase()
            )
        };
        let yaml = [
            crd("cert-manager.io", "Certificate", "certificates"),
            crd("cert-manager.io", "Issuer", "issuers"),
            crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
        ]
        .join("---\n");
        cp.apply_cluster_yaml(&yaml)
            .expect("stand-in CRDs are accepted");
        let mut wait = cp.kubectl();
        wait.args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/certificates.cert-manager.io",
            "crd/issuers.cert-manager.io",
            "crd/servicemonitors.monitoring.coreos.com",
        ]);
        run_combined(wait).expect("stand-in CRDs become Established");
    });
    cp
}

#[test]
fn helm_lint_strict_passes_with_default_values_and_with_every_option_on() {
    let cp = ControlPlane::shared();
    let mut lint = cp.helm();
    lint.args(["lint", "--strict"]).arg(chart_dir());
    let out = run_combined(lint).expect("helm lint --strict with default values");
    assert!(out.contains("0 chart(s) failed"), "{out}");

    let mut lint = cp.helm();
    lint.args(["lint", "--strict"])
        .arg(chart_dir())
        .arg("--values")
        .arg(chart_dir().join("ci/all-options-values.yaml"))
        .args(["--set", "controller.watchNamespaces={team-a,team-b}"]);
    let out = run_combined(lint).expect("helm lint --strict with every option on");
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn default_render_is_accepted_by_the_api_server() {
    let cp = with_foreign_kinds();
    let ns = cp.namespace("chart-defaults");
    let yaml = render(cp, "defaults", ns.name(), &["--include-crds"]);
    let out = dry_run(cp, &yaml).unwrap_or_else(|e| panic!("dry-run refused: {e}"));

    let docs = documents(&yaml);
    let kinds = kinds(&docs);
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.contains(&kind), "default render lacks a {kind}");
    }
    // Optional features stay off by default.
    for kind in OPTIONAL_KINDS {
        assert!(!kinds.contains(&kind), "default render has a {kind}");
    }
    assert_eq!(
        out.matches("(server dry run)").count(),
        docs.len(),
        "every object goes through the API server:\n{out}"
    );
}

#[test]
fn render_with_every_option_on_is_accepted_by_the_api_server() {
    let cp = with_foreign_kinds();
    let ns = cp.namespace("chart-all");
    let team_a = cp.namespace("team-a");
    let team_b = cp.namespace("team-b");
    let watched = format!("controller.watchNamespaces={{{team_a},{team_b}}}");
    let values = chart_dir().join("ci/all-options-values.yaml");
    let yaml = render(
        cp,
        "everything",
        ns.name(),
        &[
            "--include-crds",
            "--values",
            values.to_str().unwrap(),
            "--set",
            &watched,
        ],
    );
    dry_run(cp, &yaml).unwrap_or_else(|e| panic!("dry-run refused: {e}"));

    let docs = documents(&yaml);
    let kinds = kinds(&docs);
    for kind in OPTIONAL_KINDS {
        assert!(kinds.contains(&kind), "all-options render lacks a {kind}");
    }
    // cert-manager issues the certificate: the chart renders no key of its own.
    assert!(!kinds.contains(&"Secret"), "no chart-made Secret");

    let hpa = find(
        &docs,
        "HorizontalPodAutoscaler",
        "everything-tollgate-proxy",
    );
    let metrics = hpa["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics[0]["resource"]["name"], "cpu");
    assert_eq!(
        metrics[1]["pods"]["metric"]["name"],
        "tollgate_in_flight_requests"
    );

    // Watching two namespaces: the Secret-reading role is bound in those two only, not cluster-wide.
    let bindings: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" && d["roleRef"]["kind"] == "ClusterRole")
        .map(|d| d["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(bindings, [team_a.name(), team_b.name()]);
    assert!(
        !docs.iter().any(|d| d["kind"] == "ClusterRoleBinding"
            && d["metadata"]["name"] == "everything-tollgate-controller"),
        "no cluster-wide binding of the controller's main role"
    );
    let controller = find(&docs, "Deployment", "everything-tollgate-controller");
    let args = &controller["spec"]["template"]["spec"]["containers"][0]["args"];
    for ns in [&team_a, &team_b] {
        let flag = format!("--namespace={ns}");
        assert!(
            args.as_array().unwrap().iter().any(|a| a == flag.as_str()),
            "{args}"
        );
    }

    let dashboard = find(&docs, "ConfigMap", "everything-tollgate-dashboard");
    let json: Value =
        serde_json::from_str(dashboard["data"]["tollgate.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["title"], "Tollgate");
}

/// Applies `yaml` for real (these objects are the test's own: unique release name and namespace).
fn apply(cp: &ControlPlane, yaml: &str) {
    let mut cmd = cp.kubectl();
    cmd.args(["apply", "--server-side", "-f", "-"]);
    run_with_stdin(cmd, yaml).unwrap_or_else(|e| panic!("apply refused: {e}"));
}

/// A Pod made from a Deployment's template, as the ReplicaSet controller would make it.
fn pod_of(deployment: &Value, namespace: &str) -> Value {
    let template = &deployment["spec"]["template"];
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{}-pod", deployment["metadata"]["name"].as_str().unwrap()),
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    })
}

fn create_pod_dry_run(cp: &ControlPlane, pod: &Value) -> Result<String, String> {
    let mut cmd = cp.kubectl();
    cmd.args(["create", "--dry-run=server", "-f", "-"]);
    run_with_stdin(cmd, &serde_json::to_string(pod).unwrap())
}

fn restricted_namespace(cp: &'static ControlPlane, prefix: &str) -> TestNamespace {
    let ns = cp.namespace(prefix);
    let mut label = cp.kubectl();
    label.args([
        "label",
        "namespace",
        ns.name(),
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    run_combined(label).expect("labelling the namespace");
    ns
}

#[test]
fn controller_and_proxy_pods_pass_the_restricted_pod_security_level() {
    let cp = ControlPlane::shared();
    let ns = restricted_namespace(cp, "chart-restricted");
    let yaml = render(cp, "restricted", ns.name(), &[]);
    apply(cp, &yaml);
    let docs = documents(&yaml);

    // The admission plugin is enforcing here: a pod that runs as root is turned away.
    let mut careless = pod_of(
        find(&docs, "Deployment", "restricted-tollgate-proxy"),
        ns.name(),
    );
    careless["spec"]["securityContext"] = serde_json::json!({});
    careless["spec"]["containers"][0]["securityContext"] = serde_json::json!({});
    let refused = create_pod_dry_run(cp, &careless).expect_err("an unrestricted pod is refused");
    assert!(
        refused.contains("violates PodSecurity \"restricted"),
        "{refused}"
    );

    for name in [
        "restricted-tollgate-controller",
        "restricted-tollgate-proxy",
    ] {
        let deployment = find(&docs, "Deployment", name);
        let pod = pod_of(deployment, ns.name());
        create_pod_dry_run(cp, &pod).unwrap_or_else(|e| panic!("{name}'s pod refused: {e}"));
        let container = &pod["spec"]["containers"][0]["securityContext"];
        assert_eq!(container["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(container["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            container["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert_eq!(
            pod["spec"]["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
    }
}

#[test]
fn the_proxy_pod_carries_only_a_token_for_the_controller() {
    let cp = ControlPlane::shared();
    let yaml = render(cp, "tokens", "tokens", &[]);
    let docs = documents(&yaml);
    let proxy = &find(&docs, "Deployment", "tokens-tollgate-proxy")["spec"]["template"]["spec"];
    assert_eq!(proxy["automountServiceAccountToken"], false);
    let volumes = proxy["volumes"].as_array().unwrap();
    let token = volumes
        .iter()
        .find_map(|v| v["projected"]["sources"][0]["serviceAccountToken"].as_object())
        .expect("a projected token volume");
    assert_eq!(token["audience"], "tollgate-controller");
    let ca = volumes
        .iter()
        .find(|v| v["name"] == "controller-ca")
        .unwrap();
    assert_eq!(
        ca["secret"]["items"],
        serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}]),
        "the proxy mounts the CA, never the controller's key"
    );
    let args = proxy["containers"][0]["args"].as_array().unwrap();
    for expected in [
        "--controller=https://tokens-tollgate-controller.tokens.svc:8443",
        "--controller-ca=/etc/tollgate/controller-ca/ca.crt",
        "--token-file=/var/run/secrets/tollgate/token",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
    }
}

/// Redis over TLS with an ACL user: the user name in the environment, the password and the CA mounted
/// from their Secret and ConfigMap as files the flags name, never the password in an environment
/// variable; the API server accepts the result; contradictory settings fail the render.
#[test]
fn redis_tls_and_acl_values_mount_the_password_and_the_ca_as_files() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("chart-redis");
    let proxy_of = |yaml: &str| {
        let docs = documents(yaml);
        find(&docs, "Deployment", "redis-tollgate-proxy")["spec"]["template"]["spec"].clone()
    };
    let env_of = |proxy: &Value| -> Vec<(String, Value)> {
        proxy["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
            .collect()
    };
    let base = [
        "--set",
        "proxy.redis.url=rediss://redis.tollgate-system:6380/0",
        "--set",
        "proxy.redis.username=tollgate",
        "--set",
        "proxy.redis.passwordSecret=redis-login",
    ];
    for (ca, volume) in [
        (
            "proxy.redis.ca.configMap=redis-ca",
            serde_json::json!({"name": "redis-ca", "configMap": {"name": "redis-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}),
        ),
        (
            "proxy.redis.ca.secret=redis-tls",
            serde_json::json!({"name": "redis-ca", "secret": {"secretName": "redis-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}),
        ),
    ] {
        let mut args = base.to_vec();
        args.extend(["--set", ca]);
        let yaml = render(cp, "redis", ns.name(), &args);
        dry_run(cp, &yaml).unwrap_or_else(|e| panic!("dry-run refused: {e}"));
        let proxy = proxy_of(&yaml);
        let env = env_of(&proxy);
        let value = |name: &str| {
            env.iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| e["value"].clone())
                .unwrap_or_else(|| panic!("no {name} in {env:?}"))
        };
        assert_eq!(
            value("TOLLGATE_REDIS_URL"),
            "rediss://redis.tollgate-system:6380/0"
        );
        assert_eq!(value("TOLLGATE_REDIS_USERNAME"), "tollgate");
        assert_eq!(
            value("TOLLGATE_REDIS_PASSWORD_FILE"),
            "/etc/tollgate/redis-password/password"
        );
        assert_eq!(
            value("TOLLGATE_REDIS_CA_FILE"),
            "/etc/tollgate/redis-ca/ca.crt"
        );
        assert!(
            !env.iter()
                .any(|(_, e)| e["valueFrom"]["secretKeyRef"]["name"] == "redis-login"),
            "the password is never an environment variable: {env:?}"
        );
        let volumes = proxy["volumes"].as_array().unwrap();
        assert!(
            volumes.contains(&serde_json::json!({"name": "redis-password", "secret": {"secretName": "redis-login", "items": [{"key": "password", "path": "password"}]}})),
            "{volumes:?}"
        );
        assert!(volumes.contains(&volume), "{volumes:?}");
        let mounts = proxy["containers"][0]["volumeMounts"].as_array().unwrap();
        for (name, path) in [
            ("redis-password", "/etc/tollgate/redis-password"),
            ("redis-ca", "/etc/tollgate/redis-ca"),
        ] {
            assert!(
                mounts.contains(
                    &serde_json::json!({"name": name, "mountPath": path, "readOnly": true})
                ),
                "{mounts:?}"
            );
        }
    }

    // By default none of it.
    let proxy = proxy_of(&render(cp, "redis", ns.name(), &[]));
    let env = env_of(&proxy);
    assert!(
        !env.iter()
            .any(|(n, _)| n.starts_with("TOLLGATE_REDIS_") && n != "TOLLGATE_REDIS_TIMEOUT"),
        "{env:?}"
    );
    let volumes = proxy["volumes"].as_array().unwrap();
    assert!(
        !volumes
            .iter()
            .any(|v| v["name"] == "redis-password" || v["name"] == "redis-ca"),
        "{volumes:?}"
    );

    for (sets, expected) in [
        (
            vec!["proxy.redis.username=tollgate"],
            "need proxy.redis.url or proxy.redis.existingSecret",
        ),
        (
            vec![
                "proxy.redis.url=rediss://r:6380",
                "proxy.redis.ca.configMap=a",
                "proxy.redis.ca.secret=b",
            ],
            "not both",
        ),
        (vec!["proxy.redis.url=http://r:6379"], "/proxy/redis/url"),
        (
            vec!["proxy.redis.ca.file=x"],
            "additional properties 'file'",
        ),
    ] {
        let mut cmd = cp.helm();
        cmd.arg("template").arg("bad").arg(chart_dir());
        for set in &sets {
            cmd.args(["--set", set]);
        }
        let error = run_combined(cmd).expect_err(&sets.join(" "));
        assert!(error.contains(expected), "{sets:?}: {error}");
    }
}

#[test]
fn the_otlp_values_turn_each_signal_on_or_off() {
    let cp = ControlPlane::shared();
    let env_of = |args: &[&str]| -> Vec<(String, String)> {
        let docs = documents(&render(cp, "otlp", "tollgate-system", args));
        find(&docs, "Deployment", "otlp-tollgate-proxy")["spec"]["template"]["spec"]["containers"]
            [0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"].as_str().unwrap().starts_with("OTEL_"))
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    let value = |env: &[(String, String)], name: &str| {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    // No collector: no OTLP variable at all.
    assert_eq!(env_of(&[]), []);
    let endpoint = "proxy.tracing.endpoint=http://otel-collector:4318";
    let on = env_of(&["--set", endpoint]);
    assert_eq!(value(&on, "OTEL_METRICS_EXPORTER").as_deref(), Some("otlp"));
    assert_eq!(
        value(&on, "OTEL_METRIC_EXPORT_INTERVAL").as_deref(),
        Some("60000")
    );
    assert_eq!(value(&on, "OTEL_LOGS_EXPORTER").as_deref(), Some("none"));
    let flipped = env_of(&[
        "--set",
        endpoint,
        "--set",
        "proxy.tracing.metrics=false",
        "--set",
        "proxy.tracing.accessLogs=true",
        "--set",
        "proxy.tracing.metricExportIntervalMs=15000",
    ]);
    assert_eq!(
        value(&flipped, "OTEL_METRICS_EXPORTER").as_deref(),
        Some("none")
    );
    assert_eq!(
        value(&flipped, "OTEL_LOGS_EXPORTER").as_deref(),
        Some("otlp")
    );
    assert_eq!(
        value(&flipped, "OTEL_METRIC_EXPORT_INTERVAL").as_deref(),
        Some("15000")
    );
}

#[test]
fn an_https_collectors_ca_is_mounted_as_a_file_the_proxy_is_pointed_at() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("chart-otlp-ca");
    let endpoint = "proxy.tracing.endpoint=https://otel-collector.observability:4318";
    for (ca, volume) in [
        (
            "proxy.tracing.ca.configMap=otel-ca",
            serde_json::json!({"name": "otlp-ca", "configMap": {"name": "otel-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}),
        ),
        (
            "proxy.tracing.ca.secret=otel-tls",
            serde_json::json!({"name": "otlp-ca", "secret": {"secretName": "otel-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}),
        ),
    ] {
        let yaml = render(cp, "otlpca", ns.name(), &["--set", endpoint, "--set", ca]);
        dry_run(cp, &yaml).unwrap_or_else(|e| panic!("dry-run refused: {e}"));
        let docs = documents(&yaml);
        let pod = &find(&docs, "Deployment", "otlpca-tollgate-proxy")["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let certificate = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "OTEL_EXPORTER_OTLP_CERTIFICATE")
            .unwrap_or_else(|| panic!("no OTEL_EXPORTER_OTLP_CERTIFICATE: {container}"));
        assert_eq!(certificate["value"], "/etc/tollgate/otlp-ca/ca.crt");
        let volumes = pod["volumes"].as_array().unwrap();
        assert!(volumes.contains(&volume), "{volumes:#?}");
        let mounts = container["volumeMounts"].as_array().unwrap();
        assert!(
            mounts.iter().any(|m| m["name"] == "otlp-ca"
                && m["mountPath"] == "/etc/tollgate/otlp-ca"
                && m["readOnly"] == true),
            "{mounts:#?}"
        );
    }
    let mut cmd = cp.helm();
    cmd.arg("template").arg("bad").arg(chart_dir()).args([
        "--set",
        endpoint,
        "--set",
        "proxy.tracing.ca.configMap=a",
        "--set",
        "proxy.tracing.ca.secret=b",
    ]);
    let error = run_combined(cmd).expect_err("a ConfigMap and a Secret at once were accepted");
    assert!(error.contains("not both"), "{error}");
}

#[test]
fn the_controllers_tracing_values_become_its_otlp_variables_and_ca_file() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("chart-controller-otlp");
    let controller_of = |args: &[&str]| -> Value {
        let docs = documents(&render(cp, "ctltrace", ns.name(), args));
        find(&docs, "Deployment", "ctltrace-tollgate-controller")["spec"]["template"]["spec"]
            .clone()
    };
    let otel_env = |pod: &Value| -> Vec<Value> {
        pod["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                let name = e["name"].as_str().unwrap();
                name.starts_with("OTEL_") || name == "POD_NAMESPACE"
            })
            .cloned()
            .collect()
    };
    // No collector: nothing of it.
    let off = controller_of(&[]);
    assert_eq!(otel_env(&off), Vec::<Value>::new());
    assert!(
        !off["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "otlp-ca")
    );

    let sets = [
        "controller.tracing.endpoint=https://otel-collector.observability:4317",
        "controller.tracing.protocol=grpc",
        "controller.tracing.sampler=parentbased_traceidratio",
        "controller.tracing.samplerArg=0.5",
        "controller.tracing.resourceAttributes=deployment.environment=prod",
        "controller.tracing.headersSecret=otlp-headers",
        "controller.tracing.ca.configMap=otel-ca",
    ];
    let args: Vec<&str> = sets.iter().flat_map(|s| ["--set", *s]).collect();
    let yaml = render(cp, "ctltrace", ns.name(), &args);
    dry_run(cp, &yaml).unwrap_or_else(|e| panic!("dry-run refused: {e}"));
    let pod = controller_of(&args);
    assert_eq!(
        otel_env(&pod),
        serde_json::json!([
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "https://otel-collector.observability:4317"},
            {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "grpc"},
            {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
            {"name": "OTEL_TRACES_SAMPLER_ARG", "value": "0.5"},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "OTEL_RESOURCE_ATTRIBUTES",
             "value": "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),deployment.environment=prod"},
            {"name": "OTEL_EXPORTER_OTLP_CERTIFICATE", "value": "/etc/tollgate/otlp-ca/ca.crt"},
            {"name": "OTEL_EXPORTER_OTLP_HEADERS",
             "valueFrom": {"secretKeyRef": {"name": "otlp-headers", "key": "headers"}}},
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    // POD_NAME, which the resource attributes expand, comes before them.
    assert_eq!(pod["containers"][0]["env"][0]["name"], "POD_NAME");
    assert!(
        pod["volumes"].as_array().unwrap().contains(&serde_json::json!(
            {"name": "otlp-ca", "configMap": {"name": "otel-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
        )),
        "{pod}"
    );
    assert!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(
                {"name": "otlp-ca", "mountPath": "/etc/tollgate/otlp-ca", "readOnly": true}
            )),
        "{pod}"
    );
    // The proxy's tracing values are its own.
    let docs = documents(&yaml);
    let proxy = &find(&docs, "Deployment", "ctltrace-tollgate-proxy")["spec"]["template"]["spec"];
    assert!(
        !proxy["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{proxy}"
    );

    let mut cmd = cp.helm();
    cmd.arg("template").arg("bad").arg(chart_dir()).args([
        "--set",
        sets[0],
        "--set",
        "controller.tracing.ca.configMap=a",
        "--set",
        "controller.tracing.ca.secret=b",
    ]);
    let error = run_combined(cmd).expect_err("a ConfigMap and a Secret at once were accepted");
    assert!(
        error.contains("controller.tracing.ca.configMap") && error.contains("not both"),
        "{error}"
    );
}

#[test]
fn the_values_schema_refuses_mistakes_before_anything_is_sent() {
    let cp = ControlPlane::shared();
    for (set, expected) in [
        ("tls.source=selfsigned", "/tls/source"),
        ("controller.replica=3", "additional properties 'replica'"),
        ("proxy.service.type=Ingress", "/proxy/service/type"),
        ("proxy.httpPort=0", "/proxy/httpPort"),
        ("controller.image.digest=latest", "/controller/image/digest"),
        (
            "proxy.tracing.metricExportIntervalMs=5",
            "/proxy/tracing/metricExportIntervalMs",
        ),
        (
            "proxy.tracing.endpoint=otel-collector:4317",
            "/proxy/tracing/endpoint",
        ),
        (
            "controller.tracing.endpoint=otel-collector:4317",
            "/controller/tracing/endpoint",
        ),
        (
            "controller.tracing.accessLogs=true",
            "additional properties 'accessLogs'",
        ),
    ] {
        let mut cmd = cp.helm();
        cmd.arg("template")
            .arg("bad")
            .arg(chart_dir())
            .args(["--set", set]);
        let error = run_combined(cmd).expect_err(set);
        assert!(error.contains(expected), "--set {set}: {error}");
    }
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tollgate.dev.yaml"))
            .collect();
        names.sort();
        names
    };
    let source = repo_root().join("crds");
    let copy = chart_dir().join("crds");
    assert_eq!(
        listing(&copy),
        listing(&source),
        "run `bash charts/generate.sh`"
    );
    for name in listing(&source) {
        // crds/*.yaml are themselves checked against the Rust types (crds/tests/generated.rs).
        assert_eq!(
            std::fs::read_to_string(copy.join(&name)).unwrap(),
            std::fs::read_to_string(source.join(&name)).unwrap(),
            "charts/tollgate/crds/{name} is stale: run `bash charts/generate.sh`"
        );
    }
    let policy = std::fs::read_to_string(chart_dir().join("files/approval-policy.yaml")).unwrap();
    let original = std::fs::read_to_string(repo_root().join("crds/approval-policy.yaml")).unwrap();
    assert!(
        policy.ends_with(&original),
        "charts/tollgate/files/approval-policy.yaml is stale: run `bash charts/generate.sh`"
    );
}

#[test]
fn the_charts_decider_and_approver_roles_grant_what_crds_roles_yaml_grants() {
    let cp = ControlPlane::shared();
    let chart = documents(&render(cp, "tollgate", "tollgate", &[]));
    let crds = documents(&std::fs::read_to_string(repo_root().join("crds/roles.yaml")).unwrap());
    for role in ["approver", "decider"] {
        assert_eq!(
            find(&chart, "ClusterRole", &format!("tollgate-{role}"))["rules"],
            find(&crds, "ClusterRole", &format!("tollgate:{role}"))["rules"],
            "the chart's and crds/roles.yaml's {role} roles differ"
        );
    }
}

#[test]
fn deploy_manifest_is_the_chart_rendered_by_the_script() {
    let cp = ControlPlane::shared();
    let mut render = Command::new("bash");
    render
        .arg(repo_root().join("deploy/render.sh"))
        .arg(cp.bin_dir().join("helm"))
        .env("HELM_CACHE_HOME", cp.work_dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", cp.work_dir().join("helm/config"))
        .env("HELM_DATA_HOME", cp.work_dir().join("helm/data"));
    let want = run_combined(render).expect("deploy/render.sh");
    let have = std::fs::read_to_string(repo_root().join("deploy/tollgate.yaml")).unwrap();
    assert!(
        have == want,
        "deploy/tollgate.yaml is stale: run `bash charts/generate.sh`"
    );
}

#[test]
fn kubectl_apply_deploy_then_the_tls_secret_as_documented() {
    let cp = ControlPlane::shared();
    // The two commands in the header of deploy/tollgate.yaml.
    let mut apply = cp.kubectl();
    apply
        .current_dir(repo_root())
        .args(["apply", "-f", "deploy/"]);
    let out = run_combined(apply).unwrap_or_else(|e| panic!("kubectl apply -f deploy/: {e}"));
    assert!(
        out.contains("deployment.apps/tollgate-controller created"),
        "{out}"
    );
    let mut script = Command::new("bash");
    script.arg(repo_root().join("deploy/tls-secret.sh"));
    let secret = run_combined(script).expect("deploy/tls-secret.sh");
    let mut apply = cp.kubectl();
    apply.args(["apply", "--server-side", "-f", "-"]);
    run_with_stdin(apply, &secret).expect("the TLS Secret is accepted");

    let header = std::fs::read_to_string(repo_root().join("deploy/tollgate.yaml")).unwrap();
    assert!(header.contains("#   kubectl apply -f deploy/\n"));
    assert!(header.contains("#   bash deploy/tls-secret.sh | kubectl apply --server-side -f -\n"));

    // The Secret the Deployments mount is the one the script made, and its certificate names the
    // controller Service the proxies dial.
    let pem = cp.secret_data("tollgate", "tollgate-controller-tls", "tls.crt");
    let text = certificate_text(&pem);
    assert!(
        text.contains("DNS:tollgate-controller.tollgate.svc,"),
        "{text}"
    );
    let mut get = cp.kubectl();
    get.args([
        "get",
        "deployment",
        "tollgate-proxy",
        "-n",
        "tollgate",
        "-o",
        "jsonpath={.spec.template.spec.volumes[?(@.name==\"controller-ca\")].secret.secretName}",
    ]);
    assert_eq!(run_combined(get).unwrap(), "tollgate-controller-tls");
}
