//! `AIGuardrail`: reusable content rules (personal data, secrets, patterns, size) that routes and
//! consumers attach by name.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{conditions_schema, referred_name_schema, referred_namespace_schema};
use crate::provider::NamespaceName;

/// Content rules checked on the text of model calls: on what callers send, on what models answer, or both.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "AIGuardrail",
    plural = "aiguardrails",
    namespaced,
    status = "AIGuardrailStatus",
    shortname = "aig",
    category = "tollgate",
    doc = "Content rules (personal data, secrets, patterns, size) that routes and consumers attach by name.",
    printcolumn(name = "Applies", type_ = "string", json_path = ".spec.appliesTo"),
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.rules"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("(has(self.rules) && size(self.rules) > 0) || has(self.maxInputChars) || has(self.maxInputTokens)")
    .message("a guardrail needs at least one rule, maxInputChars or maxInputTokens"))]
#[serde(rename_all = "camelCase")]
pub struct AIGuardrailSpec {
    /// Where the rules apply: to what callers send, to what models answer, or both. Default Both.
    #[serde(default)]
    pub applies_to: GuardrailDirection,
    /// Endpoints whose text is checked. Empty means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub endpoints: Vec<GuardrailEndpoint>,
    /// The rules, checked in order; the first Reject ends the call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub rules: Vec<GuardrailRule>,
    /// Longest input accepted, in characters (Unicode scalar values) of all its text together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_input_chars: Option<u32>,
    /// Longest input accepted, in tokens, estimated as one token per four characters (rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_input_tokens: Option<u32>,
    /// Other namespaces whose routes and consumers may attach this guardrail; `*` means all. Its own
    /// namespace always may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_namespaces: Vec<NamespaceName>,
}

/// One rule: a built-in detector or a regular expression, and what to do with a match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("[has(self.detector), has(self.pattern), has(self.moderation)].filter(x, x).size() == 1")
        .message("a rule has exactly one of detector, pattern and moderation"),
    validation = Rule::new("!has(self.moderation) || self.action != 'Mask'")
        .message("a moderation rule rejects or monitors: it has nothing to mask"),
    validation = Rule::new("!has(self.maskAs) || self.action == 'Mask'")
        .message("maskAs is only used by the Mask action")
)]
#[serde(rename_all = "camelCase")]
pub struct GuardrailRule {
    /// The rule's name, given in rejections, the access log and metrics (never the matched text).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// A built-in detector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<Detector>,
    /// A regular expression (Rust `regex` syntax: linear time, no look-around or back-references).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub pattern: Option<String>,
    /// A moderation service asked about the text, after the text rules have masked it: a
    /// `ModelProvider` with OpenAI's moderation API (`POST {endpoint}/moderations`, sent with the
    /// provider's first key), or a webhook. The webhook's contract: `POST url` with
    /// `Content-Type: application/json` and `{"texts": ["…"], "direction": "request"|"response",
    /// "route": "<namespace>/<name>", "endpoint": "chat"|"messages"|"prompts"|"embeddings",
    /// "guardrail": "<namespace>/<name>", "rule": "<name>"}`; it answers 2xx with
    /// `{"flagged": true|false, "categories": ["…"]}` (`categories` optional). Any other answer, or
    /// none within the timeout, is a failure, which `failureMode` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationHook>,
    /// What a match does (a moderation rule: what a flagged text does; Mask is refused).
    pub action: GuardrailAction,
    /// The text a masked match is replaced by; defaults to the detector's token (`[EMAIL]`…) or `[REDACTED]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[^\s]+$"))]
    pub mask_as: Option<String>,
}

/// A moderation service asked about a call's text (the contract is on `GuardrailRule::moderation`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.provider) != has(self.webhook)")
        .message("a moderation hook has exactly one of provider and webhook"),
    validation = Rule::new("!has(self.model) || has(self.provider)")
        .message("model is only sent to a provider's moderation API"),
    validation = Rule::new("!has(self.threshold) || has(self.provider)")
        .message("threshold compares a provider's category scores; a webhook answers flagged or not")
)]
#[serde(rename_all = "camelCase")]
pub struct ModerationHook {
    /// A `ModelProvider` of type `OpenAI` or `OpenAICompatible` whose `/moderations` endpoint is
    /// called with its first key. It must be shared with the guardrail's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ModerationProviderRef>,
    /// A generic moderation webhook (its JSON contract is in the rule's `moderation` description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<ModerationWebhook>,
    /// The moderation model asked for. Default `omni-moderation-latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub model: Option<String>,
    /// Only these categories count (as the service names them, e.g. `hate`, `violence`); empty:
    /// whatever the service flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub categories: Vec<ModerationCategory>,
    /// A category counts when its score is at least this (0–1), rather than when the provider
    /// flags it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: Option<f64>,
    /// How long to wait for the whole answer, e.g. `500ms` or `2s`. Default `2s`, at most `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(ms|s|m|h))+$"))]
    pub timeout: Option<String>,
    /// What a failure of the service (no answer in time, refused connection, an error or an
    /// unreadable answer) does: Open lets the call through (logged and counted), Closed refuses it
    /// (503 `moderation_unavailable`). Default Closed.
    #[serde(default)]
    pub failure_mode: FailureMode,
}

/// A moderation category name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct ModerationCategory(
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9][-a-z0-9_/]*$"))] pub String,
);

/// The `ModelProvider` a moderation hook calls.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModerationProviderRef {
    /// Name of the `ModelProvider`.
    #[schemars(schema_with = "referred_name_schema")]
    pub name: String,
    /// Its namespace; defaults to the guardrail's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "referred_namespace_schema")]
    pub namespace: Option<String>,
}

/// A generic moderation webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModerationWebhook {
    /// Where texts are posted: an `http://` or `https://` URL (public CA roots), without query or
    /// fragment.
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s?#@]+$"))]
    pub url: String,
    /// A header sent with every request, its value read from a Secret in the guardrail's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<crate::rest::RestCredentials>,
}

/// What a moderation hook's failure does to the call.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum FailureMode {
    /// Let the call through unmoderated (access log and metrics note it).
    Open,
    /// Refuse the call.
    #[default]
    Closed,
}

/// A built-in detector of personal data or secrets.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum Detector {
    /// E-mail addresses.
    Email,
    /// Phone numbers (international `+…` or North-American shapes).
    Phone,
    /// Payment card numbers that pass the Luhn check.
    CreditCard,
    /// IBANs whose mod-97 checksum is right.
    Iban,
    /// US Social Security numbers (`123-45-6789`, area, group and serial rules applied).
    UsSsn,
    /// IPv4 and IPv6 addresses.
    IpAddress,
    /// API keys, tokens and private keys by their known shapes.
    Secret,
}

/// What a rule does with a match.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum GuardrailAction {
    /// Replace the match with a token before the text leaves Tollgate.
    Mask,
    /// Refuse the call (400 `content_policy_violation`), or end a streamed answer with an error.
    Reject,
    /// Only log and count the match.
    Monitor,
}

/// Which side of a call a guardrail checks.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum GuardrailDirection {
    /// What callers send.
    Request,
    /// What models answer.
    Response,
    /// Both.
    #[default]
    Both,
}

/// An endpoint whose text a guardrail checks.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum GuardrailEndpoint {
    /// `/v1/chat/completions` and `/v1/responses`.
    Chat,
    /// `/v1/messages`.
    Messages,
    /// Prompt APIs (`<prefix>/prompts/<name>`).
    Prompts,
    /// `/v1/embeddings` inputs.
    Embeddings,
    /// MCP `tools/call` of REST operations and upstream MCP servers' tools: the string values of the
    /// arguments, and the result's text (prompt tools are model calls: they count as Prompts).
    Mcp,
}

/// A guardrail attached to a route or consumer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardrailRef {
    /// Name of the `AIGuardrail`.
    #[schemars(schema_with = "referred_name_schema")]
    pub name: String,
    /// Its namespace; defaults to the referring object's. The guardrail must allow the referrer's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "referred_namespace_schema")]
    pub namespace: Option<String>,
}

/// What the controller reports about a guardrail.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AIGuardrailStatus {
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted: whether every rule compiled, and if not, what is wrong with each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Rules compiled (0 while the guardrail is not accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<i32>,
}
