//! A large standalone snapshot as CR YAML: teams of routes, consumers with keys, and subscriptions,
//! every route backed by the upstream fake through an `OpenAICompatible` provider.

use std::fmt::Write as _;

/// Shape of the generated snapshot.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Namespaces (teams); routes and consumers are spread evenly over them.
    pub teams: usize,
    /// AIRoutes in total.
    pub routes: usize,
    /// Consumers in total, each with one key in its own Secret.
    pub consumers: usize,
    /// Subscriptions per consumer, to routes of its own team.
    pub subscriptions_per_consumer: usize,
}

impl Shape {
    /// The snapshot the issue asks for: 1,000 routes and 10,000 consumers.
    pub const LARGE: Shape = Shape {
        teams: 20,
        routes: 1_000,
        consumers: 10_000,
        subscriptions_per_consumer: 2,
    };
    /// One route and one consumer: the floor the large snapshot is compared with.
    pub const SMALL: Shape = Shape {
        teams: 1,
        routes: 1,
        consumers: 1,
        subscriptions_per_consumer: 1,
    };
}

/// Where the benchmark's own calls go: the first route of the first team, called by its first consumer.
pub struct BenchIdentity {
    /// Route prefix, without a trailing slash.
    pub prefix: String,
    /// The consumer's API key.
    pub key: String,
}

fn team(t: usize) -> String {
    format!("bench-t{t:02}")
}

fn route(r: usize) -> String {
    format!("route-{r:03}")
}

/// A key that looks like a generated one, different for every consumer, the same on every run.
fn key(team: usize, consumer: usize) -> String {
    let mut x = ((team as u64) << 32 | consumer as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut out = format!("tg-bench-{team:02}-{consumer:05}-");
    for _ in 0..2 {
        // splitmix64: well spread, no dependency.
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        write!(out, "{z:016x}").expect("writing to a String");
    }
    out
}

/// The identity the load uses with a snapshot of any shape.
pub fn bench_identity() -> BenchIdentity {
    BenchIdentity {
        prefix: format!("/{}/{}", team(0), route(0)),
        key: key(0, 0),
    }
}

/// The YAML documents of a snapshot whose providers point at `upstream` (host:port).
pub fn generate(shape: Shape, upstream: &str) -> String {
    let routes_per_team = shape.routes.div_ceil(shape.teams);
    let consumers_per_team = shape.consumers.div_ceil(shape.teams);
    let mut out = String::with_capacity(shape.consumers * 1_200 + shape.routes * 900);
    let mut doc = |text: &str| {
        out.push_str("---\n");
        out.push_str(text);
    };
    for t in 0..shape.teams {
        let ns = team(t);
        for (name, path) in [("upstream", "/v1"), ("upstream-hold", "/hold/v1")] {
            doc(&format!(
                "apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: {name}, namespace: {ns}}}
spec:
  type: OpenAICompatible
  endpoint: http://{upstream}{path}
  models:
    - name: bench-chat
      pricing: {{inputPerMillion: 0.15, outputPerMillion: 0.6}}
    - name: bench-embed
      pricing: {{inputPerMillion: 0.02, outputPerMillion: 0}}
  timeouts: {{connect: 2s, firstByte: 30s, total: 120s}}
"
            ));
        }
        // Each team's first route also publishes the upstream's two calls as a REST service.
        doc(&format!(
            r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: bench-openapi, namespace: {ns}, labels: {{tollgate.dev/config: "true"}}}}
data:
  openapi.json: '{{"openapi": "3.1.0", "info": {{"title": "bench", "version": "1"}}, "paths": {{"/chat/completions": {{"post": {{"operationId": "chat"}}}}, "/embeddings": {{"post": {{"operationId": "embed"}}}}}}}}'
"#
        ));
        let rest = format!(
            "
  rest:
    backend: {{url: \"http://{upstream}/v1\"}}
    openAPI: {{configMapRef: {{name: bench-openapi}}}}"
        );
        let routes = (t * routes_per_team..((t + 1) * routes_per_team).min(shape.routes)).count();
        for r in 0..routes {
            // Every fifth route needs a decision, so both approval paths are in the table.
            let approval = if r % 5 == 4 { "Manual" } else { "Automatic" };
            doc(&format!(
                "apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: {route}, namespace: {ns}}}
spec:
  prefix: /{ns}/{route}
  description: Benchmark route {r} of team {t}.
  stage: Published
  approval: {approval}
  models:
    - name: bench-chat
      backends: [{{provider: upstream}}]
    - name: bench-embed
      backends: [{{provider: upstream}}]
    - name: bench-hold
      backends: [{{provider: upstream-hold, model: bench-chat}}]
  limits: {{requestsPerMinute: 100000000, tokensPerMinute: 1000000000000}}{rest}
{prompts}",
                route = route(r),
                rest = if r == 0 { &rest } else { "" },
                // The benchmark route's prompt API: the chat scenario's messages as a template.
                prompts = if t == 0 && r == 0 { BENCH_PROMPT } else { "" },
            ));
        }
        let consumers =
            (t * consumers_per_team..((t + 1) * consumers_per_team).min(shape.consumers)).count();
        for c in 0..consumers {
            let consumer = format!("c-{c:05}");
            doc(&format!(
                "apiVersion: v1
kind: Secret
metadata:
  name: {consumer}-key
  namespace: {ns}
  labels: {{tollgate.dev/secret: \"true\"}}
type: Opaque
stringData: {{apiKey: {key}}}
",
                key = key(t, c),
            ));
            doc(&format!(
                "apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata: {{name: {consumer}, namespace: {ns}}}
spec:
  description: Benchmark consumer {c} of team {t}.
  keys:
    - name: primary
      secretRef: {{name: {consumer}-key}}
"
            ));
            // Distinct routes per consumer (6c + 3 is never a multiple of 50), consumer 0 on route 0.
            let targets = [c % routes, (c * 7 + 3) % routes];
            for (s, r) in targets
                .iter()
                .take(shape.subscriptions_per_consumer.min(routes))
                .enumerate()
            {
                let decision = if r % 5 == 4 {
                    "\n  decision: Approved"
                } else {
                    ""
                };
                doc(&format!(
                    "apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata: {{name: {consumer}-s{s}, namespace: {ns}}}
spec:
  consumer: {consumer}
  route: {{name: {route}}}{decision}
",
                    route = route(*r),
                ));
            }
        }
    }
    out
}

/// The prompt API of the benchmark route: the chat scenario's system message and its user message as
/// one variable, so a prompt call and a chat call send the same request upstream.
const BENCH_PROMPT: &str = "  prompts:
    - name: bench-prompt
      model: bench-chat
      messages:
        - {role: system, content: You are a concise assistant for an internal platform team.}
        - {role: user, content: \"{{text}}\"}
      variables: [{name: text, maxLength: 100000}]
      parameters: {temperature: 0.2, maxTokens: 256}
";
