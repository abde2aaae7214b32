//! `ModelProvider`: one upstream LLM account.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{SecretKeyRef, conditions_schema};

/// One upstream account: where it lives, how to authenticate, which models it offers at what price,
/// and which namespaces may route to it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ModelProvider",
    namespaced,
    status = "ModelProviderStatus",
    shortname = "mp",
    category = "tollgate",
    doc = "An upstream LLM account: endpoint, credentials, models and prices.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Models", type_ = "string", json_path = ".status.models"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!(self.type in ['OpenAICompatible', 'AzureOpenAI', 'VLLM']) || has(self.endpoint)"
).message("spec.endpoint is required for OpenAICompatible, AzureOpenAI and VLLM providers: there is no default address"))]
#[x_kube(validation = Rule::new(
    "self.type in ['Fake', 'Ollama', 'VLLM', 'OpenAICompatible'] || has(self.credentials)"
).message("spec.credentials is required for this provider type: name the Secret that holds its API key"))]
#[x_kube(validation = Rule::new("self.type != 'Bedrock' || has(self.bedrock)")
    .message("a Bedrock provider needs spec.bedrock.region"))]
#[x_kube(validation = Rule::new("self.type != 'VertexAI' || has(self.vertex)")
    .message("a VertexAI provider needs spec.vertex.project and spec.vertex.region"))]
#[x_kube(validation = Rule::new("!has(self.vertex) || self.type == 'VertexAI'")
    .message("spec.vertex applies only to providers of type VertexAI"))]
#[x_kube(validation = Rule::new("!has(self.fake) || self.type == 'Fake'")
    .message("spec.fake applies only to providers of type Fake"))]
#[serde(rename_all = "camelCase")]
pub struct ModelProviderSpec {
    /// Which API the provider speaks. OpenAI-compatible presets differ only in default endpoint.
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Base URL of the API, e.g. `https://api.openai.com/v1`. Defaults per type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub endpoint: Option<String>,
    /// Where the API keys are. Several keys form a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Models this account offers. Prices default to the shipped catalog and may be overridden here.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub models: Vec<ProviderModel>,
    /// Upstream timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Other namespaces whose routes may use this provider; `*` means all. Its own namespace always may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_namespaces: Vec<NamespaceName>,
    /// Settings for Azure OpenAI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSettings>,
    /// Settings for AWS Bedrock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bedrock: Option<BedrockSettings>,
    /// Settings for Google Vertex AI: project, region, token endpoint. Its credentials are
    /// service-account JSON keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertex: Option<VertexSettings>,
    /// Behaviour of the built-in Fake provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake: Option<FakeSettings>,
    /// When the gateway stops sending calls here for a while, and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSettings>,
}

/// Passive health: a provider failing several calls in a row is taken out of rotation, then probed back.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthSettings {
    /// Consecutive failures (connect errors, timeouts, 5xx answers) that eject the provider. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive_failures: Option<u32>,
    /// How long an ejected provider is left alone before one probe call is let through. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(ms|s|m|h))+$"))]
    pub ejection_time: Option<String>,
}

/// A namespace name, or `*` for every namespace.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(transparent)]
pub struct NamespaceName(
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")
    )]
    pub String,
);

/// The API a provider speaks.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum ProviderType {
    /// api.openai.com.
    OpenAI,
    /// Azure OpenAI deployments.
    AzureOpenAI,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini API.
    Gemini,
    /// AWS Bedrock Converse API.
    Bedrock,
    /// Mistral (OpenAI-compatible).
    Mistral,
    /// Groq (OpenAI-compatible).
    Groq,
    /// DeepSeek (OpenAI-compatible).
    DeepSeek,
    /// Together AI (OpenAI-compatible).
    Together,
    /// Fireworks AI (OpenAI-compatible).
    Fireworks,
    /// OpenRouter (OpenAI-compatible).
    OpenRouter,
    /// xAI (OpenAI-compatible).
    #[serde(rename = "xAI")]
    XAi,
    /// Cohere's OpenAI-compatibility endpoint.
    Cohere,
    /// A local Ollama server (OpenAI-compatible).
    Ollama,
    /// A vLLM server (OpenAI-compatible).
    #[serde(rename = "VLLM")]
    Vllm,
    /// Any other OpenAI-compatible server; `endpoint` is required.
    OpenAICompatible,
    /// Google Vertex AI: Gemini models (`generateContent`) and Anthropic models (`rawPredict`),
    /// authenticated with a service-account key.
    #[serde(rename = "VertexAI")]
    VertexAi,
    /// Built in: deterministic answers without any network, for demos, tests and load tests.
    Fake,
}

impl ProviderType {
    /// The name users write in `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAI => "OpenAI",
            Self::AzureOpenAI => "AzureOpenAI",
            Self::Anthropic => "Anthropic",
            Self::Gemini => "Gemini",
            Self::Bedrock => "Bedrock",
            Self::Mistral => "Mistral",
            Self::Groq => "Groq",
            Self::DeepSeek => "DeepSeek",
            Self::Together => "Together",
            Self::Fireworks => "Fireworks",
            Self::OpenRouter => "OpenRouter",
            Self::XAi => "xAI",
            Self::Cohere => "Cohere",
            Self::Ollama => "Ollama",
            Self::Vllm => "VLLM",
            Self::OpenAICompatible => "OpenAICompatible",
            Self::VertexAi => "VertexAI",
            Self::Fake => "Fake",
        }
    }
}

/// Where a provider's API keys are kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// Secrets holding API keys, in this provider's namespace. More than one makes a pool.
    #[schemars(length(min = 1, max = 32))]
    pub secret_refs: Vec<SecretKeyRef>,
    /// How long a key the provider refused (401/403) or rate limited (429) is left unused while the
    /// pool's other keys carry the calls. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(ms|s|m|h))+$"))]
    pub cooldown: Option<String>,
}

/// A model the provider offers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderModel {
    /// The model's name at the provider, e.g. `gpt-4o-mini`.
    #[schemars(
        length(min = 1, max = 200),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
    )]
    pub name: String,
    /// Azure OpenAI deployment serving this model; defaults to the model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub deployment: Option<String>,
    /// Prices in USD; any price left out comes from the shipped catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

/// Prices in US dollars per million tokens.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// USD per million input (prompt) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub input_per_million: Option<f64>,
    /// USD per million output (completion) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub output_per_million: Option<f64>,
    /// USD per million cached input tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub cached_input_per_million: Option<f64>,
}

/// A duration such as `500ms`, `30s`, `5m` or `1h30m`.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}(ms|s|m|h))+$";

/// Upstream timeouts. Each is a duration such as `500ms`, `30s` or `5m`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Establishing the TCP/TLS connection. Default `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(ms|s|m|h))+$"))]
    pub connect: Option<String>,
    /// From sending the request to the response headers (the first token when streaming). Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(ms|s|m|h))+$"))]
    pub first_byte: Option<String>,
    /// Longest silence between two chunks of a response. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(ms|s|m|h))+$"))]
    pub idle: Option<String>,
    /// Whole call, streaming included. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(ms|s|m|h))+$"))]
    pub total: Option<String>,
}

/// Azure OpenAI settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureSettings {
    /// The `api-version` query parameter, e.g. `2024-10-21`.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$")
    )]
    pub api_version: String,
}

/// AWS Bedrock settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BedrockSettings {
    /// AWS region, e.g. `us-east-1`.
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    )]
    pub region: String,
}

/// Google Vertex AI settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VertexSettings {
    /// The Google Cloud project id, e.g. `my-project-123`.
    #[schemars(
        length(min = 6, max = 30),
        regex(pattern = r"^[a-z][a-z0-9-]*[a-z0-9]$")
    )]
    pub project: String,
    /// The region (location), e.g. `us-central1`, or `global`.
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^(global|[a-z]+-[a-z]+[0-9]+)$")
    )]
    pub region: String,
    /// Where the service account's signed JWT is exchanged for an access token. Default
    /// `https://oauth2.googleapis.com/token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub token_endpoint: Option<String>,
}

/// How the built-in Fake provider behaves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FakeSettings {
    /// Delay before the response headers (and the first chunk). Default `0ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(ms|s|m|h))+$"))]
    pub latency: Option<String>,
    /// Delay between two stream chunks. Default `0ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(ms|s|m|h))+$"))]
    pub chunk_interval: Option<String>,
    /// Completion tokens in each answer. Default 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub completion_tokens: Option<u32>,
    /// Stream chunks an answer is split into. Default one per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub stream_chunks: Option<u32>,
    /// Length of the vectors returned for embeddings. Default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8192))]
    pub embedding_dimensions: Option<u32>,
}

/// What the controller reports about a provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelProviderStatus {
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, ResolvedRefs, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The base URL requests are sent to, after defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Offered model names, comma-separated, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<String>,
    /// API keys found in the referenced Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<i32>,
}
