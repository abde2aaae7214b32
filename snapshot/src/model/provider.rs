//! A provider row: one upstream account with its keys, models, timeouts and health policy.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use tollgate_crds::ProviderType;

use super::limits::Price;
use super::refs::ObjectRef;

/// A provider credential. Plaintext because the proxy must send it upstream; never printed.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct Credential(pub String);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// Passive health of a provider and cooldown of the keys in its pool.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures (connect errors, timeouts, 5xx) after which the provider is taken out of rotation.
    pub failures_to_eject: u32,
    /// How long an ejected provider stays out before one probe call is let through.
    pub ejection_ms: u64,
    /// How long a key that got 401/403/429 is left unused.
    pub key_cooldown_ms: u64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            failures_to_eject: 5,
            ejection_ms: 30_000,
            key_cooldown_ms: 60_000,
        }
    }
}

/// Upstream timeouts in milliseconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP/TLS connect.
    pub connect_ms: u64,
    /// Request sent → response headers.
    pub first_byte_ms: u64,
    /// Longest gap between two body chunks.
    pub idle_ms: u64,
    /// Whole call.
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            first_byte_ms: 60_000,
            idle_ms: 60_000,
            total_ms: 600_000,
        }
    }
}

/// How the built-in Fake provider answers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeBehaviour {
    /// Delay before the response headers.
    pub latency_ms: u64,
    /// Delay between stream chunks.
    pub chunk_interval_ms: u64,
    /// Completion tokens per answer.
    pub completion_tokens: u32,
    /// Chunks a streamed answer is split into.
    pub stream_chunks: u32,
    /// Embedding vector length.
    pub embedding_dimensions: u32,
}

impl Default for FakeBehaviour {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            chunk_interval_ms: 0,
            completion_tokens: 16,
            stream_chunks: 16,
            embedding_dimensions: 8,
        }
    }
}

/// How the credential is presented upstream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AuthScheme {
    /// Header name, e.g. `authorization`, `api-key`, `x-api-key`.
    pub header: String,
    /// Prefix before the key, e.g. `Bearer `.
    pub prefix: String,
}

/// Where a Vertex AI provider's calls go and where its access tokens come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VertexTarget {
    /// Google Cloud project id.
    pub project: String,
    /// Region (location), e.g. `us-central1`, or `global`.
    pub region: String,
    /// The OAuth token endpoint the service account's signed JWT is exchanged at.
    pub token_endpoint: String,
}

/// The token endpoint of Google's OAuth 2.0 server, for service-account JWTs.
pub const GOOGLE_TOKEN_ENDPOINT: &str = "https://oauth2.googleapis.com/token";

/// A model offered by a provider, with its resolved price.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProviderModel {
    /// Name at the provider.
    pub name: String,
    /// Azure deployment name (defaults to `name`).
    pub deployment: Option<String>,
    /// Price after the shipped price list's defaults and the provider's overrides.
    pub price: Price,
}

/// One upstream account, resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Provider {
    /// The `ModelProvider` object.
    pub id: ObjectRef,
    /// Which API it speaks.
    pub provider_type: ProviderType,
    /// Base URL, without a trailing `/`, e.g. `https://api.openai.com/v1`.
    pub endpoint: String,
    /// How the key is sent.
    pub auth: AuthScheme,
    /// The key pool, in the order of `spec.credentials.secretRefs`. Empty for keyless providers.
    pub credentials: Vec<Credential>,
    /// Models offered, sorted by name.
    pub models: Vec<ProviderModel>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Azure `api-version`.
    pub azure_api_version: Option<String>,
    /// Bedrock region.
    pub bedrock_region: Option<String>,
    /// Vertex AI project, region and token endpoint (only for `ProviderType::VertexAi`).
    #[serde(default)]
    pub vertex: Option<VertexTarget>,
    /// Fake provider behaviour (only for `ProviderType::Fake`).
    pub fake: Option<FakeBehaviour>,
    /// Ejection and key cooldown.
    #[serde(default)]
    pub health: HealthPolicy,
}
