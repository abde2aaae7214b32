//! The Tollgate API on a real API server: CRDs become Established, examples are accepted, invalid
//! objects are rejected with the messages users will read, `kubectl get` is useful, and only holders
//! of the `approve` verb on a route can decide on subscriptions to it.

use std::time::Duration;

use tollgate_e2e::{CRD_NAMES, ControlPlane, TestNamespace, eventually, repo_root, run};

/// RBAC and admission-policy changes reach the API server's caches asynchronously.
const SETTLE: Duration = Duration::from_secs(30);

#[test]
fn all_four_crds_become_established() {
    let cp = ControlPlane::shared_with_tollgate_api();
    for name in CRD_NAMES {
        let mut get = cp.kubectl();
        get.args(["get", "crd", name, "-o"])
            .arg("jsonpath={.status.conditions[?(@.type==\"Established\")].status}");
        assert_eq!(run(get).unwrap(), "True", "{name}");
    }
}

#[test]
fn the_examples_are_accepted_and_kubectl_get_shows_them() {
    let cp = ControlPlane::shared_with_tollgate_api();
    let ns = cp.namespace("examples");
    for file in ["modelprovider", "airoute", "consumer", "apisubscription"] {
        let yaml =
            std::fs::read_to_string(repo_root().join(format!("deploy/examples/{file}.yaml")))
                .unwrap();
        ns.apply_yaml(&yaml)
            .unwrap_or_else(|e| panic!("{file}.yaml rejected: {e}"));
    }

    let mut get = cp.kubectl();
    get.args(["get", "tollgate", "-n", ns.name()]);
    let listing = run(get).unwrap();
    for expected in [
        "modelprovider.tollgate.dev/openai",
        "airoute.tollgate.dev/chat",
        "consumer.tollgate.dev/reporting-bot",
        "apisubscription.tollgate.dev/reporting-bot-chat",
    ] {
        assert!(
            listing.contains(expected),
            "`kubectl get tollgate` lacks {expected}:\n{listing}"
        );
    }

    // The route's Semantic cache settings were kept as written.
    let mut cache = cp.kubectl();
    cache.args([
        "get",
        "airoute",
        "chat",
        "-n",
        ns.name(),
        "-o",
        "jsonpath={.spec.cache.mode} {.spec.cache.semantic.embeddingModel} {.spec.cache.semantic.threshold}",
    ]);
    assert_eq!(
        run(cache).unwrap().trim(),
        "Semantic text-embedding-3-small 0.95"
    );

    // The controller fills status; play its part so the columns can be checked.
    let status = r#"{"status":{"models":"gpt-4o-mini,smart,text-embedding-3-small","endpoint":"/team-a/chat/v1",
        "conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"ok",
        "lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    let mut patch = cp.kubectl();
    patch.args([
        "patch",
        "airoute",
        "chat",
        "-n",
        ns.name(),
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    run(patch).expect("status patch");
    let mut routes = cp.kubectl();
    routes.args(["get", "air", "-n", ns.name()]);
    let table = run(routes).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PREFIX", "STAGE", "MODELS", "ACCEPTED", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        [
            "chat",
            "/team-a/chat",
            "Published",
            "gpt-4o-mini,smart,text-embedding-3-small",
            "True"
        ],
        "{table}"
    );

    let mut subs = cp.kubectl();
    subs.args(["get", "apisub", "-n", ns.name()]);
    let table = run(subs).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "CONSUMER", "ROUTE", "PHASE", "AGE"],
        "{table}"
    );
    assert!(
        table.lines().nth(1).unwrap().contains("reporting-bot"),
        "{table}"
    );

    let mut providers = cp.kubectl();
    providers.args(["get", "mp", "-n", ns.name()]);
    let table = run(providers).unwrap();
    assert!(table.lines().next().unwrap().contains("TYPE"), "{table}");
    assert!(table.lines().nth(1).unwrap().contains("OpenAI"), "{table}");

    let mut consumers = cp.kubectl();
    consumers.args(["get", "csm", "-n", ns.name()]);
    assert!(run(consumers).unwrap().contains("reporting-bot"));

    // Defaults filled in by the API server from the schema.
    let mut stage = cp.kubectl();
    stage.args([
        "get",
        "airoute",
        "chat",
        "-n",
        ns.name(),
        "-o",
        "jsonpath={.spec.models[0].backends[0].weight}",
    ]);
    assert_eq!(run(stage).unwrap(), "1");
}

#[test]
fn the_quickstart_is_accepted_by_the_api_server() {
    let cp = ControlPlane::shared_with_tollgate_api();
    let yaml =
        std::fs::read_to_string(repo_root().join("deploy/examples/quickstart/quickstart.yaml"))
            .unwrap();
    // The quickstart names the `default` namespace; dry-run so tests stay out of each other's way.
    let mut apply = cp.kubectl();
    apply.args(["apply", "--server-side", "--dry-run=server", "-f", "-"]);
    tollgate_e2e::run_with_stdin(apply, &yaml).expect("quickstart accepted");
}

const ROUTE_OK: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: NAME}
spec:
  prefix: /ok
  models: [{name: m, backends: [{provider: p}]}]
"#;

/// `(what, manifest, expected fragment of the API server's message)`.
fn invalid_objects() -> Vec<(&'static str, String, &'static str)> {
    let object = |kind: &str, spec: &str| {
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: bad}}\nspec:\n{spec}"
        )
    };
    let route = |spec: &str| object("AIRoute", spec);
    let provider = |spec: &str| object("ModelProvider", spec);
    let consumer = |spec: &str| object("Consumer", spec);
    let sub = |spec: &str| object("ApiSubscription", spec);
    let guardrail = |rule: &str| object("AIGuardrail", &format!("  rules:\n  - name: r\n{rule}"));
    let models = "  models: [{name: m, backends: [{provider: p}]}]\n";
    vec![
        (
            "prefix without a leading slash",
            route(&format!("  prefix: no-slash\n{models}")),
            "spec.prefix: Invalid value",
        ),
        (
            "prefix with ..",
            route(&format!("  prefix: /a/../b\n{models}")),
            "spec.prefix: Invalid value",
        ),
        (
            "prefix with a trailing slash",
            route(&format!("  prefix: /a/\n{models}")),
            "prefix must not end with '/'",
        ),
        (
            "route without models",
            route("  prefix: /a\n  models: []\n"),
            "spec.models: Invalid value",
        ),
        (
            "model without backends",
            route("  prefix: /a\n  models: [{name: m, backends: []}]\n"),
            "spec.models[0].backends: Invalid value",
        ),
        (
            "model whose backends all weigh 0",
            route("  prefix: /a\n  models: [{name: m, backends: [{provider: p, weight: 0}]}]\n"),
            "every model needs at least one backend with a weight above 0",
        ),
        (
            "route-wide total of 0 requests a minute",
            route(&format!(
                "  prefix: /a\n  totalLimits: {{requestsPerMinute: 0}}\n{models}"
            )),
            "spec.totalLimits.requestsPerMinute: Invalid value",
        ),
        (
            "model with a context window of 0 tokens",
            route(
                "  prefix: /a\n  models: [{name: m, contextWindow: 0, backends: [{provider: p}]}]\n",
            ),
            "spec.models[0].contextWindow: Invalid value",
        ),
        (
            "Deprecated route without sunset",
            route(&format!("  prefix: /a\n  stage: Deprecated\n{models}")),
            "a Deprecated route needs spec.sunset",
        ),
        (
            "deprecation later than the sunset",
            route(&format!(
                "  prefix: /a\n  stage: Deprecated\n  deprecation: 2027-06-01T00:00:00Z\n  sunset: 2027-01-01T00:00:00Z\n{models}"
            )),
            "spec.deprecation must not be later than spec.sunset",
        ),
        (
            "unknown stage",
            route(&format!("  prefix: /a\n  stage: Beta\n{models}")),
            "spec.stage: Unsupported value: \"Beta\"",
        ),
        (
            "weight above 10000",
            route(
                "  prefix: /a\n  models: [{name: m, backends: [{provider: p, weight: 20000}]}]\n",
            ),
            "should be less than or equal to 10000",
        ),
        (
            "duplicate model names",
            route(
                "  prefix: /a\n  models: [{name: m, backends: [{provider: p}]}, {name: m, backends: [{provider: q}]}]\n",
            ),
            "duplicate entries for key [name=\"m\"]",
        ),
        (
            "unknown provider type",
            provider("  type: Skynet\n  models: [{name: m}]\n"),
            "spec.type: Unsupported value: \"Skynet\"",
        ),
        (
            "OpenAI provider without credentials",
            provider("  type: OpenAI\n  models: [{name: gpt-4o}]\n"),
            "spec.credentials is required for this provider type",
        ),
        (
            "OpenAICompatible provider without endpoint",
            provider("  type: OpenAICompatible\n  models: [{name: m}]\n"),
            "spec.endpoint is required for OpenAICompatible",
        ),
        (
            "endpoint that is not a URL",
            provider("  type: VLLM\n  endpoint: not a url\n  models: [{name: m}]\n"),
            "spec.endpoint: Invalid value",
        ),
        (
            "negative price",
            provider("  type: Fake\n  models: [{name: m, pricing: {inputPerMillion: -1}}]\n"),
            "should be greater than or equal to 0",
        ),
        (
            "timeout that is not a duration",
            provider("  type: Fake\n  models: [{name: m}]\n  timeouts: {connect: soon}\n"),
            "spec.timeouts.connect: Invalid value",
        ),
        (
            "Vertex AI provider without its project and region",
            provider(
                "  type: VertexAI\n  credentials: {secretRefs: [{name: sa}]}\n  models: [{name: m}]\n",
            ),
            "a VertexAI provider needs spec.vertex.project and spec.vertex.region",
        ),
        (
            "Vertex AI settings on another provider",
            provider(
                "  type: Ollama\n  models: [{name: m}]\n  vertex: {project: acme-ai, region: us-east5}\n",
            ),
            "spec.vertex applies only to providers of type VertexAI",
        ),
        (
            "Vertex AI region that is no region",
            provider(
                "  type: VertexAI\n  credentials: {secretRefs: [{name: sa}]}\n  models: [{name: m}]\n  vertex: {project: acme-ai, region: \"us east\"}\n",
            ),
            "spec.vertex.region: Invalid value",
        ),
        (
            "fake settings on a real provider",
            provider("  type: Ollama\n  models: [{name: m}]\n  fake: {completionTokens: 3}\n"),
            "spec.fake applies only to providers of type Fake",
        ),
        (
            "consumer key with both secretRef and generate",
            consumer("  keys: [{name: k, secretRef: {name: s}, generate: true}]\n"),
            "exactly one of the two",
        ),
        (
            "consumer key with neither secretRef nor generate",
            consumer("  keys: [{name: k}]\n"),
            "exactly one of the two",
        ),
        (
            "rotation grace on a key the team keeps in its own Secret",
            consumer("  keys: [{name: k, secretRef: {name: s}, rotationGraceSeconds: 60}]\n"),
            "rotationGraceSeconds applies only to a generated key",
        ),
        (
            "rotation grace longer than 30 days",
            consumer("  keys: [{name: k, generate: true, rotationGraceSeconds: 2592001}]\n"),
            "rotationGraceSeconds: Invalid value",
        ),
        (
            "subscription with an unknown decision",
            sub("  consumer: c\n  route: {name: r}\n  decision: Maybe\n"),
            "spec.decision: Unsupported value: \"Maybe\"",
        ),
        (
            "subscription without a route",
            sub("  consumer: c\n"),
            "spec.route: Required value",
        ),
        (
            "subscription whose daily budget exceeds its monthly one",
            sub("  consumer: c\n  route: {name: r}\n  budget: {monthlyUsd: 10, dailyUsd: 20}\n"),
            "budget.dailyUsd cannot be larger than budget.monthlyUsd",
        ),
        (
            "consumer with a negative budget",
            consumer("  keys: [{name: k, generate: true}]\n  budget: {monthlyUsd: -1}\n"),
            "spec.budget.monthlyUsd: Invalid value",
        ),
        (
            "route retry budget above 100 percent",
            route(&format!(
                "  prefix: /x\n{models}  retryBudget: {{percent: 150}}\n"
            )),
            "spec.retryBudget.percent: Invalid value",
        ),
        (
            "prompt whose name is not a DNS label",
            route(&format!(
                "  prefix: /x\n{models}  prompts: [{{name: Bad_Name, model: m, messages: [{{role: user, content: hi}}]}}]\n"
            )),
            "spec.prompts[0].name: Invalid value",
        ),
        (
            "prompt with two variables of one name",
            route(&format!(
                "  prefix: /x\n{models}  prompts: [{{name: p, model: m, messages: [{{role: user, content: hi}}], variables: [{{name: v}}, {{name: v}}]}}]\n"
            )),
            "duplicate entries for key [name=\"v\"]",
        ),
        (
            "prompt enum variable without values",
            route(&format!(
                "  prefix: /x\n{models}  prompts: [{{name: p, model: m, messages: [{{role: user, content: hi}}], variables: [{{name: v, type: enum}}]}}]\n"
            )),
            "a variable of type enum lists its values",
        ),
        (
            "prompt boolean variable with a default that is neither true nor false",
            route(&format!(
                "  prefix: /x\n{models}  prompts: [{{name: p, model: m, messages: [{{role: user, content: hi}}], variables: [{{name: v, type: boolean, default: maybe}}]}}]\n"
            )),
            "the default of a boolean variable is true or false",
        ),
        (
            "prompt JSONSchema output without a schema",
            route(&format!(
                "  prefix: /x\n{models}  prompts: [{{name: p, model: m, messages: [{{role: user, content: hi}}], output: {{type: JSONSchema}}}}]\n"
            )),
            "output type JSONSchema needs a schema",
        ),
        (
            "prompt message with a role templates cannot have",
            route(&format!(
                "  prefix: /x\n{models}  prompts: [{{name: p, model: m, messages: [{{role: tool, content: hi}}]}}]\n"
            )),
            "Unsupported value: \"tool\"",
        ),
        (
            "provider key cooldown that is not a duration",
            provider(
                "  type: OpenAI\n  models: [{name: m}]\n  credentials: {secretRefs: [{name: s}], cooldown: soon}\n",
            ),
            "spec.credentials.cooldown: Invalid value",
        ),
        (
            "cache kept longer than 30 days",
            route(&format!("  prefix: /x\n{models}  cache: {{ttl: 721h}}\n")),
            "cache.ttl must be above 0 and at most 720h (30 days)",
        ),
        (
            "a model's cache kept longer than 30 days",
            route(
                "  prefix: /x\n  models: [{name: m, backends: [{provider: p}], cache: {ttl: 721h}}]\n",
            ),
            "cache.ttl must be above 0 and at most 720h (30 days)",
        ),
        (
            "a model's cache with semantic settings in Exact mode",
            route(
                "  prefix: /x\n  models: [{name: m, backends: [{provider: p}], cache: {enabled: false, semantic: {embeddingModel: m}}}]\n",
            ),
            "cache.semantic is required with mode Semantic and allowed only with it",
        ),
        (
            "cache kept for no time",
            route(&format!("  prefix: /x\n{models}  cache: {{ttl: 0s}}\n")),
            "cache.ttl must be above 0 and at most 720h (30 days)",
        ),
        (
            "cache ttl that is not a duration",
            route(&format!("  prefix: /x\n{models}  cache: {{ttl: 1d}}\n")),
            "spec.cache.ttl: Invalid value",
        ),
        (
            "unknown cache scope",
            route(&format!("  prefix: /x\n{models}  cache: {{scope: Team}}\n")),
            "spec.cache.scope: Unsupported value: \"Team\"",
        ),
        (
            "unknown cached endpoint",
            route(&format!(
                "  prefix: /x\n{models}  cache: {{endpoints: [Images]}}\n"
            )),
            "Unsupported value: \"Images\"",
        ),
        (
            "cache entries of 0 bytes",
            route(&format!(
                "  prefix: /x\n{models}  cache: {{maxEntryBytes: 0}}\n"
            )),
            "spec.cache.maxEntryBytes: Invalid value",
        ),
        (
            "content capture cap below its bounds",
            route(&format!(
                "  prefix: /x\n{models}  telemetry: {{captureContent: {{enabled: true, maxBytes: 10}}}}\n"
            )),
            "spec.telemetry.captureContent.maxBytes: Invalid value",
        ),
        (
            "content capture cap without enabling it",
            route(&format!(
                "  prefix: /x\n{models}  telemetry: {{captureContent: {{maxBytes: 1024}}}}\n"
            )),
            "captureContent.maxBytes is set only with enabled: true",
        ),
        (
            "semantic cache without its settings",
            route(&format!(
                "  prefix: /x\n{models}  cache: {{mode: Semantic}}\n"
            )),
            "cache.semantic is required with mode Semantic and allowed only with it",
        ),
        (
            "semantic settings on an exact cache",
            route(&format!(
                "  prefix: /x\n{models}  cache: {{semantic: {{embeddingModel: m}}}}\n"
            )),
            "cache.semantic is required with mode Semantic and allowed only with it",
        ),
        (
            "semantic cache without an embeddings model",
            route(&format!(
                "  prefix: /x\n{models}  cache: {{mode: Semantic, semantic: {{threshold: 0.9}}}}\n"
            )),
            "spec.cache.semantic.embeddingModel: Required value",
        ),
        (
            "semantic threshold above 1",
            route(&format!(
                "  prefix: /x\n{models}  cache: {{mode: Semantic, semantic: {{embeddingModel: m, threshold: 1.5}}}}\n"
            )),
            "spec.cache.semantic.threshold: Invalid value",
        ),
        (
            "semantic threshold of 0",
            route(&format!(
                "  prefix: /x\n{models}  cache: {{mode: Semantic, semantic: {{embeddingModel: m, threshold: 0}}}}\n"
            )),
            "cache.semantic.threshold must be above 0",
        ),
        (
            "semantic cache looking up long conversations",
            route(&format!(
                "  prefix: /x\n{models}  cache: {{mode: Semantic, semantic: {{embeddingModel: m, maxTurns: 65}}}}\n"
            )),
            "spec.cache.semantic.maxTurns: Invalid value",
        ),
        (
            "guardrail rule with a pattern and a moderation hook",
            guardrail(
                "    pattern: x\n    action: Reject\n    moderation: {provider: {name: openai}}\n",
            ),
            "a rule has exactly one of detector, pattern and moderation",
        ),
        (
            "moderation rule that masks",
            guardrail("    action: Mask\n    moderation: {provider: {name: openai}}\n"),
            "a moderation rule rejects or monitors: it has nothing to mask",
        ),
        (
            "moderation hook with a provider and a webhook",
            guardrail(
                "    action: Reject\n    moderation: {provider: {name: openai}, webhook: {url: 'https://m.example.com'}}\n",
            ),
            "a moderation hook has exactly one of provider and webhook",
        ),
        (
            "moderation webhook with a threshold",
            guardrail(
                "    action: Reject\n    moderation: {webhook: {url: 'https://m.example.com'}, threshold: 0.5}\n",
            ),
            "threshold compares a provider's category scores",
        ),
        (
            "moderation webhook URL that is not http",
            guardrail(
                "    action: Reject\n    moderation: {webhook: {url: 'ftp://m.example.com'}}\n",
            ),
            "spec.rules[0].moderation.webhook.url: Invalid value",
        ),
        (
            "unknown moderation failure mode",
            guardrail(
                "    action: Reject\n    moderation: {provider: {name: openai}, failureMode: Maybe}\n",
            ),
            "Unsupported value: \"Maybe\"",
        ),
    ]
}

#[test]
fn invalid_objects_are_rejected_with_a_clear_message() {
    let cp = ControlPlane::shared_with_tollgate_api();
    let ns = cp.namespace("invalid");
    let cases = invalid_objects();
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for (what, manifest, expected) in &cases {
        match ns.apply_yaml(manifest) {
            Ok(out) => failures.push(format!("{what}: accepted ({out})")),
            Err(err) if !err.contains(expected) => failures.push(format!(
                "{what}: rejected, but the message lacks {expected:?}:\n{err}"
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn subscription(name: &str, route: &str, route_ns: &str, extra: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: ApiSubscription\nmetadata: {{name: {name}}}\n\
         spec:\n  consumer: app\n  route: {{name: {route}, namespace: {route_ns}}}\n{extra}"
    )
}

fn patch_as(
    cp: &ControlPlane,
    user: &str,
    ns: &TestNamespace,
    name: &str,
    patch: &str,
) -> Result<String, String> {
    let mut cmd = cp.kubectl_as(user, &[]);
    cmd.args([
        "patch",
        "apisubscription",
        name,
        "-n",
        ns.name(),
        "--type=merge",
        "-p",
        patch,
    ]);
    run(cmd)
}

#[test]
fn consumer_and_route_of_a_subscription_are_immutable() {
    let cp = ControlPlane::shared_with_tollgate_api();
    let ns = cp.namespace("immutable");
    ns.apply_yaml(&subscription("s", "chat", ns.name(), ""))
        .unwrap();
    let mut cmd = cp.kubectl();
    cmd.args([
        "patch",
        "apisubscription",
        "s",
        "-n",
        ns.name(),
        "--type=merge",
        "-p",
    ])
    .arg(r#"{"spec":{"consumer":"other"}}"#);
    let err = run(cmd).unwrap_err();
    assert!(err.contains("spec.consumer is immutable"), "{err}");
    let mut cmd = cp.kubectl();
    cmd.args([
        "patch",
        "apisubscription",
        "s",
        "-n",
        ns.name(),
        "--type=merge",
        "-p",
    ])
    .arg(r#"{"spec":{"route":{"name":"elsewhere"}}}"#);
    let err = run(cmd).unwrap_err();
    assert!(err.contains("spec.route is immutable"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_holders_of_approve_on_the_route_can_decide() {
    let cp = ControlPlane::shared_with_tollgate_api();
    let team_a = cp.namespace("subscriber"); // the consumer's team
    let team_b = cp.namespace("owner"); // the route owner's team
    for route in ["chat", "other"] {
        team_b.apply_yaml(&ROUTE_OK.replace("NAME", route)).unwrap();
    }

    // alice: an ordinary editor of her own team's subscriptions.
    team_a.grant(
        "alice",
        &["get", "list", "create", "update", "patch"],
        &["apisubscriptions.tollgate.dev"],
    );
    // bob: may edit subscriptions in team-a (e.g. through a cluster-wide approver role) and approve `chat`.
    team_a.grant(
        "bob",
        &["get", "list", "update", "patch"],
        &["apisubscriptions.tollgate.dev"],
    );
    grant_approve(&team_b, "bob", "chat");
    // carol: same, but approve is granted on `other` only.
    team_a.grant(
        "carol",
        &["get", "list", "update", "patch"],
        &["apisubscriptions.tollgate.dev"],
    );
    grant_approve(&team_b, "carol", "other");

    // alice can create a subscription without a decision, once her RBAC has settled.
    let pending = subscription("wants-chat", "chat", team_b.name(), "");
    eventually("alice may create subscriptions", SETTLE, || async {
        team_a.apply_yaml_as("alice", &[], &pending)
    })
    .await;

    // ... but not approve it herself, neither at creation nor afterwards.
    let self_approved = subscription(
        "self-approved",
        "chat",
        team_b.name(),
        "  decision: Approved\n",
    );
    let err = team_a
        .apply_yaml_as("alice", &[], &self_approved)
        .unwrap_err();
    assert!(
        err.contains("requires the verb \"approve\" on airoutes.tollgate.dev \"chat\""),
        "{err}"
    );
    assert!(
        err.contains(&format!("in namespace \"{}\"", team_b.name())),
        "{err}"
    );
    let err = patch_as(
        cp,
        "alice",
        &team_a,
        "wants-chat",
        r#"{"spec":{"decision":"Approved"}}"#,
    )
    .unwrap_err();
    assert!(err.contains("may not set spec.decision"), "{err}");

    // Other edits by the subscriber are unaffected.
    patch_as(
        cp,
        "alice",
        &team_a,
        "wants-chat",
        r#"{"spec":{"limits":{"requestsPerMinute":5}}}"#,
    )
    .expect("alice may change her requested limits");

    // carol holds approve on another route only: denied.
    let carol = eventually("carol's RBAC settles", SETTLE, || async {
        match patch_as(
            cp,
            "carol",
            &team_a,
            "wants-chat",
            r#"{"spec":{"decision":"Approved"}}"#,
        ) {
            Err(e) if e.contains("may not set spec.decision") => Ok(e),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(carol.contains("user \"carol\""), "{carol}");

    // bob holds approve on `chat`: allowed, and he can also reject later.
    eventually("bob may approve", SETTLE, || async {
        patch_as(
            cp,
            "bob",
            &team_a,
            "wants-chat",
            r#"{"spec":{"decision":"Approved","decisionReason":"ok"}}"#,
        )
    })
    .await;

    // The approver's limits hold: bob lowers them, and alice cannot raise them again, nor remove
    // them (absent means the route's ceiling). Lowering stays free; so does setting one that was absent.
    patch_as(
        cp,
        "bob",
        &team_a,
        "wants-chat",
        r#"{"spec":{"limits":{"requestsPerMinute":3},"budget":{"monthlyUsd":10}}}"#,
    )
    .expect("bob may lower the limits he approved");
    for raise in [
        r#"{"spec":{"limits":{"requestsPerMinute":100}}}"#,
        r#"{"spec":{"limits":null}}"#,
        r#"{"spec":{"limits":{"requestsPerMinute":null}}}"#,
        r#"{"spec":{"budget":{"monthlyUsd":20}}}"#,
        r#"{"spec":{"budget":null}}"#,
    ] {
        let err = patch_as(cp, "alice", &team_a, "wants-chat", raise).unwrap_err();
        assert!(
            err.contains("may not raise spec.limits or spec.budget of the approved ApiSubscription \"wants-chat\"")
                && err.contains("requires the verb \"approve\" on airoutes.tollgate.dev \"chat\""),
            "{raise}: {err}"
        );
    }
    for lower in [
        r#"{"spec":{"limits":{"requestsPerMinute":2}}}"#,
        r#"{"spec":{"limits":{"tokensPerMinute":1000}}}"#,
        r#"{"spec":{"budget":{"monthlyUsd":5,"dailyUsd":1}}}"#,
    ] {
        patch_as(cp, "alice", &team_a, "wants-chat", lower)
            .unwrap_or_else(|e| panic!("alice may lower ({lower}): {e}"));
    }
    patch_as(
        cp,
        "bob",
        &team_a,
        "wants-chat",
        r#"{"spec":{"limits":{"requestsPerMinute":50}}}"#,
    )
    .expect("bob may raise them: he may approve");

    patch_as(
        cp,
        "bob",
        &team_a,
        "wants-chat",
        r#"{"spec":{"decision":"Revoked"}}"#,
    )
    .expect("bob may revoke");
    // Not approved any more: asking for more is free again (approving it again takes `approve`).
    patch_as(
        cp,
        "alice",
        &team_a,
        "wants-chat",
        r#"{"spec":{"limits":{"requestsPerMinute":500}}}"#,
    )
    .expect("alice may ask for more on a revoked subscription");
    let mut get = cp.kubectl();
    get.args([
        "get",
        "apisub",
        "wants-chat",
        "-n",
        team_a.name(),
        "-o",
        "jsonpath={.spec.decision}",
    ]);
    assert_eq!(run(get).unwrap(), "Revoked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decider_may_decide_on_routes_they_approve_and_change_nothing_else() {
    let cp = ControlPlane::shared_with_tollgate_api();
    let team_a = cp.namespace("decided"); // the consumer's team
    let team_b = cp.namespace("deciding"); // the route owner's team
    for route in ["chat", "other"] {
        team_b.apply_yaml(&ROUTE_OK.replace("NAME", route)).unwrap();
    }
    for route in ["chat", "other"] {
        team_a
            .apply_yaml(&subscription(
                &format!("wants-{route}"),
                route,
                team_b.name(),
                "",
            ))
            .unwrap();
    }
    // dave: the shipped decider role cluster-wide (crds/roles.yaml), and approve on `chat` only.
    let dave = format!("dave-{}", team_a.name());
    let mut bind = cp.kubectl();
    bind.args([
        "create",
        "clusterrolebinding",
        &dave,
        "--clusterrole=tollgate:decider",
    ])
    .arg(format!("--user={dave}"));
    run(bind).expect("binding tollgate:decider");
    grant_approve(&team_b, &dave, "chat");

    eventually("dave may approve", SETTLE, || async {
        patch_as(
            cp,
            &dave,
            &team_a,
            "wants-chat",
            r#"{"spec":{"decision":"Approved","decisionReason":"fine"}}"#,
        )
    })
    .await;
    patch_as(
        cp,
        &dave,
        &team_a,
        "wants-chat",
        r#"{"spec":{"limits":{"requestsPerMinute":10},"budget":{"monthlyUsd":3}}}"#,
    )
    .expect("dave may set the limits of a subscription he approves");

    // Everything else is refused: other fields, and anything on a route he may not approve.
    let only = "may change only spec.decision, spec.decisionReason, spec.limits and spec.budget";
    let refused = [
        ("wants-chat", r#"{"metadata":{"labels":{"x":"y"}}}"#, only),
        (
            "wants-chat",
            r#"{"metadata":{"annotations":{"x":"y"}}}"#,
            only,
        ),
        (
            "wants-chat",
            r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
            only,
        ),
        (
            "wants-chat",
            r#"{"spec":{"consumer":"someone-else"}}"#,
            "spec.consumer is immutable",
        ),
        (
            "wants-other",
            r#"{"spec":{"decision":"Approved"}}"#,
            "may not set spec.decision",
        ),
        (
            "wants-other",
            r#"{"spec":{"limits":{"requestsPerMinute":1}}}"#,
            only,
        ),
    ];
    for (name, patch, expected) in refused {
        let err = patch_as(cp, &dave, &team_a, name, patch).unwrap_err();
        assert!(err.contains(expected), "{name} {patch}: {err}");
    }
    // Nor can he delete, create, write status, touch routes, or read Secrets.
    let can_i = |args: &[&str]| {
        let mut cmd = cp.kubectl_as(&dave, &[]);
        cmd.args(["auth", "can-i"]).args(args);
        // "no" comes with exit status 1.
        let out = cmd.output().expect("kubectl auth can-i");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let a = team_a.name();
    let b = team_b.name();
    for (want, question) in [
        (
            "yes",
            vec!["list", "apisubscriptions.tollgate.dev", "--all-namespaces"],
        ),
        (
            "yes",
            vec!["patch", "apisubscriptions.tollgate.dev", "-n", a],
        ),
        (
            "no",
            vec!["update", "apisubscriptions.tollgate.dev", "-n", a],
        ),
        (
            "no",
            vec!["delete", "apisubscriptions.tollgate.dev", "-n", a],
        ),
        (
            "no",
            vec!["create", "apisubscriptions.tollgate.dev", "-n", a],
        ),
        (
            "no",
            vec![
                "patch",
                "apisubscriptions.tollgate.dev",
                "--subresource=status",
                "-n",
                a,
            ],
        ),
        ("no", vec!["patch", "airoutes.tollgate.dev", "-n", b]),
        ("no", vec!["patch", "consumers.tollgate.dev", "-n", a]),
        (
            "no",
            vec!["approve", "airoutes.tollgate.dev/other", "-n", b],
        ),
        ("no", vec!["get", "secrets", "-n", a]),
    ] {
        assert_eq!(can_i(&question), want, "can-i {question:?}");
    }
    let mut get = cp.kubectl();
    get.args([
        "get",
        "apisub",
        "wants-other",
        "-n",
        a,
        "-o",
        "jsonpath={.spec}",
    ]);
    let other = run(get).unwrap();
    assert!(
        !other.contains("decision") && !other.contains("limits"),
        "{other}"
    );
    let mut cleanup = cp.kubectl();
    cleanup.args(["delete", "clusterrolebinding", &dave]);
    run(cleanup).expect("removing the binding");
}

fn grant_approve(ns: &TestNamespace, user: &str, route: &str) {
    let manifest = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: approve-{user}}}\n\
         rules: [{{apiGroups: [tollgate.dev], resources: [airoutes], resourceNames: [{route}], verbs: [approve]}}]\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: approve-{user}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: approve-{user}}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
    );
    ns.apply_yaml(&manifest).expect("granting approve");
}
