//! The harness proven against the real API server: version, isolation, RBAC, tokens, apply, helm.

use std::time::Duration;

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    core::v1::{ConfigMap, Pod, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use tollgate_e2e::{ControlPlane, KUBERNETES_VERSION, eventually};

/// RBAC changes reach the authorizer through an informer: give them a moment, boundedly.
const RBAC_SETTLE: Duration = Duration::from_secs(20);
/// Audience the controller will ask proxies' tokens to carry.
const AUDIENCE: &str = "tollgate-controller";

#[tokio::test]
async fn reports_the_pinned_kubernetes_version() {
    let cp = ControlPlane::shared();
    let info = cp
        .client()
        .await
        .apiserver_version()
        .await
        .expect("GET /version");
    assert_eq!(KUBERNETES_VERSION, "v1.34.4");
    assert_eq!(info.git_version, KUBERNETES_VERSION);
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "34"));
}

#[tokio::test]
async fn namespaces_keep_tests_apart() {
    let cp = ControlPlane::shared();
    let (a, b) = (cp.namespace("isolation"), cp.namespace("isolation"));
    assert_ne!(
        a.name(),
        b.name(),
        "the same prefix must still give distinct namespaces"
    );
    for (ns, owner) in [(&a, "a"), (&b, "b")] {
        ns.apply_yaml(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: same-name\ndata:\n  owner: {owner}\n"
        ))
        .expect("creating the ConfigMap");
    }

    let client = cp.client().await;
    for (ns, owner) in [(&a, "a"), (&b, "b")] {
        let found = Api::<ConfigMap>::namespaced(client.clone(), ns.name())
            .list(&ListParams::default())
            .await
            .expect("listing ConfigMaps");
        let owners: Vec<_> = found
            .items
            .iter()
            .map(|cm| cm.data.as_ref().and_then(|d| d.get("owner")).cloned())
            .collect();
        assert_eq!(owners, [Some(owner.to_owned())], "namespace {ns}");
    }
}

#[tokio::test]
async fn impersonated_users_get_exactly_what_rbac_grants() {
    let cp = ControlPlane::shared();
    let (ns, elsewhere) = (cp.namespace("rbac"), cp.namespace("rbac-elsewhere"));
    let user = "e2e-alice";
    let alice = cp.client_as(user, &["e2e-team"]).await;
    let pods = |ns: &str| Api::<Pod>::namespaced(alice.clone(), ns);

    let denied = pods(ns.name())
        .list(&ListParams::default())
        .await
        .expect_err("a user without RoleBindings must not list pods");
    assert_forbidden(&denied);

    ns.grant_cluster_role(user, "edit");
    eventually(
        "alice may list pods after binding `edit`",
        RBAC_SETTLE,
        || {
            let pods = pods(ns.name());
            async move { pods.list(&ListParams::default()).await }
        },
    )
    .await;

    let still_denied = pods(elsewhere.name())
        .list(&ListParams::default())
        .await
        .expect_err("the RoleBinding must not reach other namespaces");
    assert_forbidden(&still_denied);

    // kubectl's impersonation agrees with the client's.
    assert_eq!(can_i(cp, user, "list", "pods", ns.name()), "yes");
    assert_eq!(can_i(cp, user, "list", "pods", elsewhere.name()), "no");
}

#[tokio::test]
async fn grant_allows_custom_verbs_on_custom_resources() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("grant");
    let user = "e2e-approver";
    // The resource needs no CRD: RBAC rules are plain strings.
    ns.grant(user, &["approve"], &["airoutes.tollgate.dev"]);

    let client = cp.client().await;
    eventually(
        "the `approve` grant is visible to the authorizer",
        RBAC_SETTLE,
        || {
            may(
                &client,
                user,
                ns.name(),
                "approve",
                "tollgate.dev",
                "airoutes",
            )
        },
    )
    .await;
    assert!(
        may(
            &client,
            user,
            ns.name(),
            "update",
            "tollgate.dev",
            "airoutes"
        )
        .await
        .is_err(),
        "only the granted verb is allowed"
    );
}

#[tokio::test]
async fn service_account_tokens_are_issued_and_reviewed() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("tokens");
    let client = cp.client().await;

    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![AUDIENCE.to_owned()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(client.clone(), ns.name())
        .create_token_request("default", &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the default ServiceAccount");
    let token = issued.status.expect("a TokenRequest status").token;
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let review = |audience: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.clone()),
            audiences: Some(vec![audience.to_owned()]),
        },
        ..Default::default()
    };
    let reviews = Api::<TokenReview>::all(client);
    let accepted = reviews
        .create(&PostParams::default(), &review(AUDIENCE))
        .await
        .expect("TokenReview")
        .status
        .expect("a TokenReview status");
    assert_eq!(accepted.authenticated, Some(true), "{accepted:?}");
    let username = accepted.user.and_then(|u| u.username);
    assert_eq!(
        username,
        Some(format!("system:serviceaccount:{ns}:default"))
    );

    let wrong_audience = reviews
        .create(&PostParams::default(), &review("someone-else"))
        .await
        .expect("TokenReview")
        .status
        .expect("a TokenReview status");
    assert_ne!(
        wrong_audience.authenticated,
        Some(true),
        "{wrong_audience:?}"
    );
}

#[test]
fn apply_yaml_reports_what_the_api_server_says() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("apply");
    let config_map =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n";

    let applied = ns.apply_yaml(config_map).expect("a valid object applies");
    assert!(
        applied.contains("configmap/settings serverside-applied"),
        "{applied}"
    );

    let invalid =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  ports:\n  - port: 70000\n";
    let rejected = ns.apply_yaml(invalid).expect_err("port 70000 is invalid");
    assert!(rejected.contains("Invalid value: 70000"), "{rejected}");

    let forbidden = ns
        .apply_yaml_as("e2e-mallory", &[], config_map)
        .expect_err("a user without rights cannot apply");
    assert!(forbidden.contains("forbidden"), "{forbidden}");
}

#[test]
fn helm_reaches_the_cluster() {
    let cp = ControlPlane::shared();
    let out = cp
        .helm()
        .args(["list", "--all-namespaces", "--output=json"])
        .output()
        .expect("running helm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

fn assert_forbidden(error: &kube::Error) {
    match error {
        kube::Error::Api(status) => assert!(status.is_forbidden(), "expected 403, got {status:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

/// `kubectl auth can-i` as `user`: "yes" or "no".
fn can_i(cp: &ControlPlane, user: &str, verb: &str, resource: &str, ns: &str) -> String {
    cp.can_i(user, &[], &[verb, resource, "--namespace", ns])
}

/// Asks the authorizer (as the admin) whether `user` may `verb` the resource; `Err` says why not.
async fn may(
    client: &Client,
    user: &str,
    ns: &str,
    verb: &str,
    group: &str,
    resource: &str,
) -> Result<(), String> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_owned()),
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| e.to_string())?
        .status
        .ok_or("no SubjectAccessReview status")?;
    if answer.allowed {
        Ok(())
    } else {
        Err(format!(
            "{user} may not {verb} {resource}.{group} in {ns}: {answer:?}"
        ))
    }
}
